"""The ``publish`` stage: the self-contained publish tree, its STAC catalog and manifest
(:mod:`~ai4land.publish.run`), and regeneration checked against a manifest
(:mod:`~ai4land.publish.regenerate`)."""
