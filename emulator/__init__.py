"""Local HTTPS stand-ins for Entra ID, Microsoft Graph mail and Azure Key Vault.

It models Microsoft's documented behaviour and imports nothing from the app, so the app can never
agree with it by construction. Start it with ``python -m emulator`` or ``emulator.app.Emulator``.
"""
