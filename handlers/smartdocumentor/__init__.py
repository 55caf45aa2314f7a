"""SmartDocumentor beyond its webhooks: its API client, pollers and an emulator to try them on.

``client`` talks to the external API, ``reconcile`` finds exports whose webhook never came,
``emulator`` is a local stand-in for the vendor (``hookdock emulate smartdocumentor``).
"""
