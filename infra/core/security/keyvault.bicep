// Key Vault for the key that wraps each connection's token-cache data key (issue 26: the caches are sealed
// in Table storage, docs/security.md) and the ticket signing key.
// RBAC only (no access policies), soft delete on, purge protection on: a deleted vault or
// secret can be recovered for 90 days and cannot be purged early (see docs/deploy.md, tearing down).
param name string
param location string
param tags object = {}

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Name of the RSA key wrapping the token caches\' data keys (the app setting KEY_VAULT_KEY_NAME).')
param tokenKeyName string = 'mailbridge-tokens'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109: Flex Consumption without VNet integration has no fixed outbound addresses to allow-list; access is RBAC-only (see docs/deploy.md, network isolation).
  // checkov:skip=CKV_AZURE_189: same reason: the app and the deploying user reach the vault over its public endpoint, authorized by Entra RBAC only.
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// The key that wraps each connection's data key (RSA-OAEP-256). wrapKey/unwrapKey only: it never encrypts,
// signs or leaves the vault. A new version (rotation) keeps the old ones: caches wrapped by an old version
// still open, and the app wraps new data keys with the latest.
resource tokenKey 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  parent: vault
  name: tokenKeyName
  // checkov:skip=CKV_AZURE_40: an expiry would stop every unwrap at once (no mailbox could send); rotate by adding a version instead (docs/operations.md).
  // checkov:skip=CKV_AZURE_112: a Standard vault has no HSM keys; the wrapped data keys are erased with their rows, not by the key (docs/security.md).
  properties: {
    kty: 'RSA'
    keySize: 2048
    keyOps: [
      'wrapKey'
      'unwrapKey'
    ]
    attributes: {
      enabled: true
    }
  }
}

output id string = vault.id
output tokenKeyName string = tokenKey.name
output name string = vault.name
output uri string = vault.properties.vaultUri
