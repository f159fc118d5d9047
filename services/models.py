"""Every table of every service, so that migrations see one complete schema."""


def import_all_models() -> None:
    import services.access.models
    import services.outreach.models
    import services.profiles.models
    import services.routing.models
    import services.segments.models
    import services.sync.models  # noqa: F401
