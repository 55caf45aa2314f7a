"""SuperOffice beyond its webhooks: batch tasks, started and polled to their end.

The webhook source is ``handlers.sources.superoffice`` (with every other source, where the
``hookdock.sources`` entry points name it); this package is the API side: ``client`` (auth,
JSON or XML answers), ``batch_tasks`` (the ``superoffice.batch_tasks`` poller) and
``emulator`` (``hookdock emulate superoffice``).
"""
