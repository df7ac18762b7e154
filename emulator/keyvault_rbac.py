"""Key Vault data-plane RBAC: the built-in roles' DataActions and the action each REST call needs.

Sources: "Azure built-in roles for Security"
(https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles/security) for the roles'
``dataActions``; "Azure permissions for Security", Microsoft.KeyVault
(https://learn.microsoft.com/en-us/azure/role-based-access-control/permissions/security#microsoftkeyvault)
for the action names (``secrets/getSecret/action`` reads a value, ``secrets/readMetadata/action`` lists
and reads properties, ``keys/unwrap/action`` unwraps, ...). The 403 body follows what the service sends:
``{"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action on resource.
...Action: '...'...", "innererror": {"code": "ForbiddenByRbac"}}}``.
"""

from __future__ import annotations

import fnmatch

PREFIX = "Microsoft.KeyVault/vaults/"

# Built-in role name -> (role definition id, dataActions).
BUILT_IN_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Key Vault Administrator": ("00482a5a-887f-4fb3-b363-3b7fe8e74483", ("Microsoft.KeyVault/vaults/*",)),
    "Key Vault Reader": (
        "21090545-7ca7-4776-b22c-e363652d74d2",
        ("Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"),
    ),
    "Key Vault Secrets Officer": ("b86a8fe4-44ce-4948-aee5-eccb2c155cd7", ("Microsoft.KeyVault/vaults/secrets/*",)),
    "Key Vault Secrets User": (
        "4633458b-17de-408a-b874-0445c86b69e6",
        (
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ),
    ),
    "Key Vault Crypto Officer": (
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        ("Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"),
    ),
    "Key Vault Crypto User": (
        "12338af0-0e69-4776-bea7-57ae8d297424",
        tuple(
            f"Microsoft.KeyVault/vaults/keys/{a}"
            for a in (
                "read",
                "update/action",
                "backup/action",
                "encrypt/action",
                "decrypt/action",
                "wrap/action",
                "unwrap/action",
                "sign/action",
                "verify/action",
            )
        ),
    ),
    "Key Vault Crypto Service Encryption User": (
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        (
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ),
    ),
    "Key Vault Certificate User": (
        "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        (
            "Microsoft.KeyVault/vaults/certificates/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ),
    ),
}
_BY_ID = {role_id: name for name, (role_id, _) in BUILT_IN_ROLES.items()}


def role_name(role: str) -> str:
    """The built-in role's name for a name or a role definition id; ValueError when unknown."""
    if role in BUILT_IN_ROLES:
        return role
    if role.lower() in _BY_ID:
        return _BY_ID[role.lower()]
    raise ValueError(f"unknown Key Vault built-in role {role!r}; known: {sorted(BUILT_IN_ROLES)}")


def permits(roles: list[str], action: str) -> bool:
    """True when one of ``roles`` (built-in role names) grants the data action ``action``."""
    for role in roles:
        for pattern in BUILT_IN_ROLES[role][1]:
            if fnmatch.fnmatchcase(action, pattern):
                return True
    return False


def forbidden_message(action: str, claims: dict, resource: str) -> str:
    """The service's 403 text (caller, action, resource; assignment not found)."""
    return (
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
        "definitions were changed recently, please observe propagation time.\r\n"
        f"Caller: appid={claims.get('appid')};oid={claims.get('oid')};iss={claims.get('iss')}\r\n"
        f"Action: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\n"
        "DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
    )
