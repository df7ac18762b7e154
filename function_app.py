"""Mailbridge Function app: wiring only. Each trigger group lives in its own blueprint module."""

import azure.functions as func

from blueprints.connect import connect_bp
from blueprints.health import health_bp
from blueprints.keepalive import keepalive_bp
from blueprints.messages import messages_bp
from blueprints.parking import parking_bp
from blueprints.sender import sender_bp
from blueprints.ui import ui_bp
from blueprints.webhooks import webhooks_bp
from shared.base.log_policy import apply_log_policy

apply_log_policy()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health_bp)
app.register_functions(connect_bp)
app.register_functions(ui_bp)
app.register_functions(keepalive_bp)
app.register_functions(messages_bp)
app.register_functions(sender_bp)
app.register_functions(parking_bp)
app.register_functions(webhooks_bp)
