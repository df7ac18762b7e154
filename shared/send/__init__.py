"""Sending mail: the message model and its validation (mail), accepting a message over HTTP (intake), the send
pipeline of one queue message (sender) and what a wait or a refusal makes of it (refusals), Graph calls (graph),
attachments and draft mode (attachments, drafts), the delivery records and the outgoing log (deliveries,
outgoing_log). Pacing is asked through its one question; tokens through TokenService.

May import: base, tokens, pacing
"""
