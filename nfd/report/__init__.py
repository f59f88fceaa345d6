"""Report: the paper's tables (``nfd table``) and the step / sampling benchmark (``nfd bench``)."""
