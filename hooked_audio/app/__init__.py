"""Applications built on the library: the ``hooked-audio`` command, plots (PNG) and offline HTML reports.
The library itself (``hooked_audio`` outside ``app/`` and ``toy/``) never imports from here."""
