"""National cloud presets: which hosts a given Azure cloud uses.

Facts from Microsoft's national-cloud documentation (see ../docs/deploy.md and REFERENCE.md):
app registrations and tokens never cross clouds, so one setting picks every host at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    """Hosts of one Azure cloud."""

    name: str
    authority_host: str
    graph_endpoint: str
    key_vault_suffix: str
    # Audience of the managed-identity token exchanged for the app's token (federated identity credential).
    fic_audience: str = "api://AzureADTokenExchange"

    @property
    def graph_resource(self) -> str:
        """The Graph resource URI that scopes are qualified with outside the public cloud."""
        return self.graph_endpoint


CLOUDS: dict[str, Cloud] = {
    "public": Cloud("public", "https://login.microsoftonline.com", "https://graph.microsoft.com", "vault.azure.net"),
    "usgov": Cloud(
        "usgov",
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us",
        "vault.usgovcloudapi.net",
        "api://AzureADTokenExchangeUSGov",
    ),
    "usgovdod": Cloud(
        "usgovdod",
        "https://login.microsoftonline.us",
        "https://dod-graph.microsoft.us",
        "vault.usgovcloudapi.net",
        "api://AzureADTokenExchangeUSGov",
    ),
    # MSAL's constant for 21Vianet; Entra docs also name login.partner.microsoftonline.cn.
    "china": Cloud(
        "china",
        "https://login.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn",
        "vault.azure.cn",
        "api://AzureADTokenExchangeChina",
    ),
}
