"""Connections and their tokens: the connections and flows tables (store), the MSAL token cache per connection
in Key Vault (secrets), the per-connection blob leases (locks), access and refresh tokens (tokens), the app's own
credential health (app_credential), what an Entra error means (entra_errors) and the keep-alive sweep that
refreshes idle connections (refresh).

May import: base
"""
