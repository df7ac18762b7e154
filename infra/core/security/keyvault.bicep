// Key Vault for the MSAL token caches (one secret per connection) and the ticket signing key.
// RBAC only (no access policies), soft delete on, purge protection on: a deleted vault or
// secret can be recovered for 90 days and cannot be purged early (see docs/deploy.md, tearing down).
param name string
param location string
param tags object = {}

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

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

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
