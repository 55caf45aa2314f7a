"""Documill Dynamo: document generation in batches that never calls back.

``client`` talks to the Dynamo API (``x-dynamo-tenant-id``/``x-dynamo-api-key``), ``submit``
posts a batch (JSON, or multipart with an embedded template and ``param.<name>`` parts),
``batches`` is the ``documill.batches`` poller that watches submitted batches to their results,
``emulator`` a local stand-in (``hookdock emulate documill``).
"""
