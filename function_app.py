"""Mailbridge Function app: wiring only. Each trigger group lives in its own blueprint module."""

import azure.functions as func

from blueprints.connect import connect_bp
from blueprints.health import health_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health_bp)
app.register_functions(connect_bp)
