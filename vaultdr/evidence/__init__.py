"""Evidence a drill leaves behind: ``evidence.json``, the HTML report, the index, the manifest.

``models`` is the schema (the pydantic models ``docs/evidence.schema.json`` is generated
from); ``schema`` validates against them; ``report`` renders ``templates/report.html.j2``;
``manifest.seal_run`` seals a run directory. The fields are documented in
``docs/evidence-schema.md``.
"""
