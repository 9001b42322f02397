from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """The demo's commands (demo, seed_demo, demo_otp_code) and its seed data. Loaded only with DEBUG on,
    and not part of the installed package: production code never imports it."""

    name = "devtools"
    verbose_name = "Demo and development tools"
