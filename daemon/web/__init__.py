"""The web dashboard, served by the service when ``web.enabled`` is true (``pip install lipsyncd[web]``)."""
