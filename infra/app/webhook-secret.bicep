// The webhook signing secret(s) (WEBHOOK_SECRET, whsec_...; two space-separated during a rotation), stored as a
// Key Vault secret. The app reads it through a Key Vault reference app setting, so the value never appears in app
// settings, outputs or deployment history. Only the secret's URI leaves this module.
param keyVaultName string
param secretName string

@secure()
@description('The whsec_ secret(s); supplied by main.bicep (the operator\'s WEBHOOK_SECRET).')
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  // checkov:skip=CKV_AZURE_41: an expiry would silently stop every webhook; rotation is operator-driven (docs/events.md, rotating the secret).
  properties: {
    value: value
    contentType: 'text/plain; mailbridge=webhook-secret'
    attributes: {
      enabled: true
    }
  }
}

// Versionless URI: the app setting follows the latest version after a rotation.
output secretUri string = secret.properties.secretUri
