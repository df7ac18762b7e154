// A user-assigned managed identity. main.bicep makes two: the app's (its code reaches the mail data in
// Storage, Key Vault and Application Insights, and it is the federated credential of the Entra app
// registration: no client secret) and the Functions host's (AzureWebJobsStorage, deployment package).
@description('Identity name.')
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
