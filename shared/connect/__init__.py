"""The connect flow: a user signs in through Entra and Mailbridge keeps a connection (flow: ConnectService,
the browser steps, disconnect and reconnect), the pending admin-consent grants (grants), signed tickets and
tokens for the browser round trips (tickets) and the id token checks (id_tokens).

May import: base, tokens
"""
