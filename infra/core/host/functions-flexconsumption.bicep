// Flex Consumption (FC1) plan + Linux function app with two user-assigned identities: the app's
// (its code, Key Vault references) and the host's (AzureWebJobsStorage, and the private blob
// container holding the deployment package, which the platform reads with it). App settings are applied by app/appsettings.bicep once the app registration exists
// (its redirect URIs need this app's host name, and the settings need its client id).
param name string
param planName string
param location string
param tags object = {}

@description('azd service name this app hosts (azure.yaml services.<name>).')
param serviceName string

@description('Primary blob endpoint of the storage account (ends with /).')
param storageBlobEndpoint string
param deploymentContainerName string

@description('Resource id of the app\'s user-assigned identity (the code; Key Vault references).')
param identityId string

@description('Resource id of the Functions host\'s user-assigned identity (host storage, deployment package).')
param hostIdentityId string

@allowed([
  'python'
])
param runtimeName string = 'python'

@allowed([
  '3.11'
])
param runtimeVersion string = '3.11'

param instanceMemoryMB int = 2048
@description('Upper bound of scale-out (default of the Flex Consumption quickstarts).')
param maximumInstanceCount int = 100

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  // checkov:skip=CKV_AZURE_225: zone redundancy for Flex Consumption is offered only in some regions; a region-independent template cannot turn it on.
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
      '${hostIdentityId}': {}
    }
  }
  // checkov:skip=CKV_AZURE_222: users' browsers must reach /api/connect/* and /api/admin-consent/* (OAuth redirects), so the app is public; APIs are protected by function keys.
  // checkov:skip=CKV_AZURE_17: incoming client certificates would break those browser redirects.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; queue and timer work tolerates a cold start (always-ready instances are an operator cost choice).
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check (healthCheckPath is not supported on the plan).
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hostIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
  }
}

// Basic-auth publishing (FTP and SCM) off: azd deploys with Entra credentials.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
