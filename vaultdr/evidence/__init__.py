"""Evidence a drill leaves behind: ``evidence.json``, the HTML report, the index, the manifest.

The schema is documented in ``docs/evidence-schema.md``.
"""
