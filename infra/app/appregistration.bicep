// The Entra app registration users consent to, created with the Microsoft Graph Bicep extension
// (bicepconfig.json pins br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.0.0).
// Delegated Microsoft Graph scopes only: Mail.Send always, Mail.Send.Shared and Mail.ReadWrite
// behind switches, plus openid/profile/offline_access. It has no password or certificate: its
// only credential is a federated identity credential trusting the app's managed identity.
extension microsoftGraphV1

@description('Immutable key of the registration (idempotent re-deploys).')
param uniqueName string
param displayName string

@allowed([
  'AzureADMyOrg'
  'AzureADMultipleOrgs'
  'AzureADandPersonalMicrosoftAccount'
])
param signInAudience string

@description('https://<function app host>, without a trailing slash.')
param publicBaseUrl string

param enableSharedMailboxes bool
param enableMailReadWrite bool

@description('Object (principal) id of the user-assigned managed identity that acts as the credential.')
param managedIdentityPrincipalId string

@allowed([
  'public'
  'usgov'
  'usgovdod'
  'china'
])
param azureCloud string

var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'

// Microsoft Graph delegated permission (oauth2PermissionScopes) ids.
var scopeIds = {
  mailSend: 'e383f46e-2787-4529-855e-0e479a3ffac0' // Mail.Send
  mailSendShared: 'a367ab51-6b49-43bf-a716-a1fb06d2a174' // Mail.Send.Shared
  mailReadWrite: '024d486e-b451-40bb-833d-3e66d98c5c73' // Mail.ReadWrite
  openid: '37f7f235-527c-4136-accd-4a02d197296e' // openid
  profile: '14dad69e-099b-42c9-810b-d002981feec1' // profile
  offlineAccess: '7427e0e9-2fba-42fe-b0c0-848c9e6a8182' // offline_access
}

var alwaysScopes = [
  {
    id: scopeIds.mailSend
    type: 'Scope'
  }
  {
    id: scopeIds.openid
    type: 'Scope'
  }
  {
    id: scopeIds.profile
    type: 'Scope'
  }
  {
    id: scopeIds.offlineAccess
    type: 'Scope'
  }
]
var sharedScopes = enableSharedMailboxes ? [
  {
    id: scopeIds.mailSendShared
    type: 'Scope'
  }
] : []
var readWriteScopes = enableMailReadWrite ? [
  {
    id: scopeIds.mailReadWrite
    type: 'Scope'
  }
] : []

// The managed identity's token for this audience is the client assertion. The audience is per
// cloud; the app must ask its managed identity for '<audience>/.default'.
var tokenExchangeAudiences = {
  public: 'api://AzureADTokenExchange'
  usgov: 'api://AzureADTokenExchangeUSGov'
  usgovdod: 'api://AzureADTokenExchangeUSGov'
  china: 'api://AzureADTokenExchangeChina'
}

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: signInAudience
  api: {
    // Personal Microsoft accounts require v2 tokens; harmless for work/school accounts.
    requestedAccessTokenVersion: 2
  }
  web: {
    redirectUris: [
      '${publicBaseUrl}/api/connect/callback'
      '${publicBaseUrl}/api/admin-consent/callback'
    ]
    implicitGrantSettings: {
      enableAccessTokenIssuance: false
      enableIdTokenIssuance: false
    }
  }
  requiredResourceAccess: [
    {
      resourceAppId: microsoftGraphAppId
      resourceAccess: concat(alwaysScopes, sharedScopes, readWriteScopes)
    }
  ]

  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${application.uniqueName}/managed-identity'
    description: 'The Mailbridge function app managed identity (no client secret).'
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: managedIdentityPrincipalId
    audiences: [
      tokenExchangeAudiences[azureCloud]
    ]
  }
}

// The service principal in the home tenant, so its own admins can consent right away.
resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
}

output appId string = application.appId
output objectId string = application.id
