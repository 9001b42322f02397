"""The only package that imports ``stripe``. Billing talks to it through ``gateway`` in plain dataclasses."""
