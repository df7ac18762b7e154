// The HMAC key that signs connect tickets, stored as a Key Vault secret. The app reads it through
// a Key Vault reference app setting (TICKET_SIGNING_KEY), so the value never appears in app
// settings, outputs or deployment history. Only the secret's URI leaves this module.
param keyVaultName string
param secretName string

@secure()
@description('Key material; supplied by main.bicep (operator value or a random default).')
param value string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  // checkov:skip=CKV_AZURE_41: an expiry would silently break ticket verification; rotation is operator-driven (docs/operations.md, rotating keys).
  properties: {
    value: value
    contentType: 'text/plain; mailbridge=ticket-signing-key'
    attributes: {
      enabled: true
    }
  }
}

// Versionless URI: the app setting follows the latest version after a rotation.
output secretUri string = secret.properties.secretUri
