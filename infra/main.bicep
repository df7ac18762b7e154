// Mailbridge: everything `azd up` provisions, at subscription scope.
// Creates one resource group (rg-<environmentName>) and composes one module per concern:
// identity, storage, key vault, monitoring and alerts, the Flex Consumption function app, the Entra app
// registration (Microsoft Graph Bicep extension), the app settings and the role assignments.
// No keys, connection secrets or client secrets are created or output: every hop uses the
// user-assigned managed identity (and the app registration trusts it as a federated credential).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds resource names and the resource group name.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person (or CI principal) running azd. Gets no data role that can read tokens unless deployerDataAccess is true. Empty: no assignments.')
param principalId string = ''

@description('Give principalId the data roles for local runs against the deployed resources (Storage data roles, Key Vault Secrets Officer and Crypto User on the token key). RISK: whoever holds them can unwrap and redeem every connected mailbox\'s refresh token, and send as any connected mailbox. Default false: nobody holds standing access to tokens; grant it for a time through PIM if you must (docs/security.md).')
param deployerDataAccess bool = false

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Principal type of principalId.')
param principalType string = 'User'

@allowed([
  ''
  'public'
  'usgov'
  'usgovdod'
  'china'
])
@description('AZURE_CLOUD for the app (login and Graph hosts). Empty: derived from the cloud this deployment runs in; usgovdod must be chosen explicitly.')
param azureCloud string = ''

@allowed([
  'AzureADMyOrg'
  'AzureADMultipleOrgs'
  'AzureADandPersonalMicrosoftAccount'
])
@description('Who may connect a mailbox: this tenant only, any work/school tenant, or also personal Outlook.com accounts.')
param signInAudience string = 'AzureADMultipleOrgs'

@description('ENTRA_TENANT for the app: organizations, common or a tenant id. Empty: derived from signInAudience.')
param entraTenant string = ''

@description('Client id of an app registration created outside this template (national clouds, or no Graph permission to deploy). Empty: the template creates the registration.')
param entraClientId string = ''

@description('https://origin of a custom domain in front of the app (docs/operations.md, custom domain). Empty: the function app\'s own https://<name>.azurewebsites.net.')
param customBaseUrl string = ''

@description('Comma-separated origins (https://app.example.com) that connect links may return to. Empty: only the app\'s own origin (the app refuses to start with none).')
param allowedReturnOrigins string = ''

@description('Queues (comma- or space-separated) a message\'s callback.queue may name besides the events queue (docs/producers.md). Empty: none. Queues named here must exist.')
param callbackQueues string = ''

@description('TENANT_EXTERNAL_RECIPIENT_LIMITS: opt-in per-tenant budgets of external recipients (Exchange Online\'s TERRL), a JSON object of tenant id -> license count (docs/settings.md). Empty: off.')
param tenantExternalRecipientLimits string = ''

@description('WEBHOOK_URL: https endpoint of the SaaS backend that receives every outcome event, signed (docs/events.md). Empty: no webhooks.')
param webhookUrl string = ''

@secure()
@description('WEBHOOK_SECRET: whsec_ secret (two, space-separated, during a rotation). Stored in Key Vault; the app setting is a reference.')
param webhookSecret string = ''

@allowed([
  'none'
  'base64'
])
@description('EVENTS_MESSAGE_ENCODING of the events and callback queues: none (plain JSON) or base64 (what a Functions app with the default host.json reads).')
param eventsMessageEncoding string = 'none'

@description('Ask for Mail.Send.Shared so users can send as / on behalf of shared mailboxes.')
param enableSharedMailboxes bool = false

@description('Ask for Mail.ReadWrite (large attachments via upload sessions, draft-based idempotent send).')
param enableMailReadWrite bool = false

@description('Six-field NCRONTAB (UTC) for the token keep-alive timer.')
param refreshSchedule string = '0 30 * * * *'

@description('Connections whose refresh token was last redeemed more than this many days ago get refreshed.')
param refreshAfterDays int = 60

@description('Largest accepted message, in bytes (default 25 MiB).')
@minValue(65536)
@maxValue(157286400)
param maxMessageBytes int = 26214400

@description('Object ids of the managed identities (Logic Apps, Function Apps, ...) that may put messages on the outbound queue: Storage Queue Data Message Sender on that queue only. See docs/producers.md.')
param producerPrincipalIds array = []

@description('Object ids of the managed identities that may read the events queue (role: eventReaderRole, on that queue only).')
param eventReaderPrincipalIds array = []

@description('Email address that receives every alert (docs/operations.md). Empty: alerts fire and show in the portal, nobody is mailed.')
param alertEmail string = ''

@allowed([
  'MessageProcessor'
  'Reader'
])
@description('Role of event readers on the events queue: MessageProcessor (receive and delete) or Reader (peek and read only).')
param eventReaderRole string = 'MessageProcessor'

// ---------------------------------------------------------------------------------------------
// Scale and sending limits (docs/deploy.md, "Scale and sending limits"). The queue function runs on
// up to maximumInstanceCount instances, each taking host.json's batchSize + newBatchThreshold
// messages at a time; the per-mailbox limits below cap what any one mailbox sends across all of
// them. Each limit is one azd variable (main.parameters.json) -> one parameter here -> one line
// in `limitSettings` -> one app setting read by shared/base/settings.py. A new limit (for example
// the consumer Outlook.com ones) adds exactly those four lines and its row in docs/deploy.md. The
// keep-alive's concurrency and run length follow the same path (runs per day: refreshSchedule).

@minValue(1)
@maxValue(1000)
@description('Upper bound of Flex Consumption scale-out for the app (the plan allows up to 1,000).')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB (billed per GB-second while executing).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(16)
@description('MAILBOX_CONCURRENCY: Graph requests in flight per mailbox (Outlook allows 4 per app and mailbox).')
param mailboxConcurrency int = 4

@minValue(1)
@maxValue(10000)
@description('MAILBOX_MESSAGES_PER_MINUTE: messages per mailbox per minute (Exchange Online: 30).')
param mailboxMessagesPerMinute int = 30

@minValue(1)
@maxValue(1000000)
@description('MAILBOX_RECIPIENTS_PER_DAY: recipients per mailbox per rolling 24 hours (Exchange Online: 10,000).')
param mailboxRecipientsPerDay int = 10000

@minValue(1)
@maxValue(64)
@description('KEEPALIVE_CONCURRENCY: keep-alive refreshes in flight (docs/capacity.md sizes it for 1M connections).')
param keepAliveConcurrency int = 4

@minValue(10)
@maxValue(540)
@description('KEEPALIVE_RUN_SECONDS: how long one keep-alive run takes new work (below the 10-minute functionTimeout).')
param keepAliveRunSeconds int = 480

@minValue(100)
@maxValue(1000000)
@description('TOKEN_KEY_CACHE_SIZE: token-cache data keys one instance keeps unwrapped (each miss is a Key Vault unwrap; ~0.6 KB each).')
param tokenKeyCacheSize int = 100000

var limitSettings = {
  MAILBOX_CONCURRENCY: string(mailboxConcurrency)
  MAILBOX_MESSAGES_PER_MINUTE: string(mailboxMessagesPerMinute)
  MAILBOX_RECIPIENTS_PER_DAY: string(mailboxRecipientsPerDay)
  KEEPALIVE_CONCURRENCY: string(keepAliveConcurrency)
  KEEPALIVE_RUN_SECONDS: string(keepAliveRunSeconds)
  TOKEN_KEY_CACHE_SIZE: string(tokenKeyCacheSize)
}
// ---------------------------------------------------------------------------------------------

@secure()
@description('HMAC key for connect tickets, at least 32 characters of random text. Empty: a fresh random key is written on this deployment (see docs/operations.md, rotating keys).')
param ticketSigningKey string = ''

// Never mapped in main.parameters.json: only its newGuid() default is ever used.
@secure()
// checkov:skip=CKV_AZURE_131: the default is newGuid(), fresh per deployment, not a hard-coded value (Bicep's secure-parameter-default rule allows it).
@description('Random fallback for ticketSigningKey; leave unset.')
param generatedTicketSigningKey string = '${newGuid()}${newGuid()}'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var derivedCloud = environment().name == 'AzureUSGovernment' ? 'usgov' : (environment().name == 'AzureChinaCloud' ? 'china' : 'public')
var effectiveCloud = empty(azureCloud) ? derivedCloud : azureCloud
var tenantForAudience = {
  AzureADMyOrg: tenant().tenantId
  AzureADMultipleOrgs: 'organizations'
  AzureADandPersonalMicrosoftAccount: 'common'
}
var effectiveEntraTenant = empty(entraTenant) ? tenantForAudience[signInAudience] : entraTenant

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var attachmentsContainerName = 'mail-attachments'
var lockContainerName = 'mailbridge-locks' // per-connection refresh leases (shared/tokens/locks.py)
// Every table the app uses; mailboxbudgets holds the per-mailbox sending budgets shared by all instances
// (shared/pacing/budget.py); tokencaches the sealed MSAL token caches (shared/tokens/cache_store.py);
// parkedmessages the waits longer than 30 s, kept out of the trigger queue until due (shared/send/parking.py).
var appTableNames = [
  'connections'
  'authflows'
  'deliveries'
  'mailboxbudgets'
  'tokencaches'
  'parkedmessages'
]
var outboundQueueName = 'outbound-mail'
var eventsQueueName = 'mail-events'
var webhookQueueName = 'webhook-deliveries'
var webhookSecretName = 'webhook-secret'
var ticketKeySecretName = 'ticket-signing-key'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'core/identity/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

// The Functions host's own identity (AzureWebJobsStorage, the deployment package): kept apart from the app's,
// which handles producers' blob names and so may reach only the mail data (app/rbac.bicep, issue 23).
module hostIdentity 'core/identity/user-assigned-identity.bicep' = {
  name: 'host-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}host-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    // Every table, queue and container the app uses: it creates none itself in Azure (shared/base/storage.py
    // creates_missing), so a cold instance's first send spends no request on "create if missing".
    containers: [
      deploymentContainerName
      attachmentsContainerName
      lockContainerName
    ]
    queues: [
      outboundQueueName
      '${outboundQueueName}-poison'
      eventsQueueName
      webhookQueueName
      '${webhookQueueName}-poison'
    ]
    tables: appTableNames
  }
}

module keyVault 'core/security/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
  }
}

module ticketKey 'app/ticket-key.bicep' = {
  name: 'ticket-key'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.name
    secretName: ticketKeySecretName
    value: empty(ticketSigningKey) ? generatedTicketSigningKey : ticketSigningKey
  }
}

// Only when webhooks are configured: the secret in Key Vault, read by the app through a Key Vault reference.
module webhookSecretRef 'app/webhook-secret.bicep' = if (!empty(webhookSecret)) {
  name: 'webhook-secret'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.name
    secretName: webhookSecretName
    value: webhookSecret
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module alerts 'core/monitor/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.insightsAlertRules}${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    storageAccountName: storage.outputs.name
    alertEmail: alertEmail
    keyVaultName: keyVault.outputs.name
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    appPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'core/host/functions-flexconsumption.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    identityId: identity.outputs.id
    hostIdentityId: hostIdentity.outputs.id
    runtimeName: 'python'
    runtimeVersion: '3.11'
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

// Where browsers reach the app: the custom domain when one is set, else the function app's host name.
var publicBaseUrl = empty(customBaseUrl) ? functionApp.outputs.uri : customBaseUrl

module appRegistration 'app/appregistration.bicep' = if (empty(entraClientId)) {
  name: 'appregistration'
  scope: rg
  params: {
    uniqueName: 'mailbridge-${resourceToken}'
    displayName: 'Mailbridge (${environmentName})'
    signInAudience: signInAudience
    publicBaseUrl: publicBaseUrl
    enableSharedMailboxes: enableSharedMailboxes
    enableMailReadWrite: enableMailReadWrite
    managedIdentityPrincipalId: identity.outputs.principalId
    azureCloud: effectiveCloud
  }
}

var effectiveEntraClientId = empty(entraClientId) ? appRegistration.outputs.appId : entraClientId

module appSettings 'app/appsettings.bicep' = {
  name: 'appsettings'
  scope: rg
  params: {
    functionAppName: functionApp.outputs.name
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityClientId: identity.outputs.clientId
    hostIdentityClientId: hostIdentity.outputs.clientId
    keyVaultUrl: keyVault.outputs.uri
    keyVaultKeyName: keyVault.outputs.tokenKeyName
    ticketKeySecretUri: ticketKey.outputs.secretUri
    entraClientId: effectiveEntraClientId
    entraTenant: effectiveEntraTenant
    azureCloud: effectiveCloud
    publicBaseUrl: publicBaseUrl
    allowedReturnOrigins: empty(allowedReturnOrigins) ? publicBaseUrl : allowedReturnOrigins
    callbackQueues: callbackQueues
    tenantExternalRecipientLimits: tenantExternalRecipientLimits
    outboundQueueName: outboundQueueName
    eventsQueueName: eventsQueueName
    webhookQueueName: webhookQueueName
    webhookUrl: webhookUrl
    webhookSecretUri: empty(webhookSecret) ? '' : webhookSecretRef.outputs.secretUri
    eventsMessageEncoding: eventsMessageEncoding
    attachmentsContainerName: attachmentsContainerName
    refreshAfterDays: refreshAfterDays
    refreshSchedule: refreshSchedule
    enableSharedMailboxes: enableSharedMailboxes
    enableMailReadWrite: enableMailReadWrite
    maxMessageBytes: maxMessageBytes
    limitSettings: limitSettings
  }
  // The settings reference the ticket key through Key Vault: let the role exist before the
  // app restarts with them, so the first resolution does not fail.
  dependsOn: [
    rbac
  ]
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    hostPrincipalId: hostIdentity.outputs.principalId
    appContainerNames: [
      attachmentsContainerName
      lockContainerName
    ]
    appTableNames: appTableNames
    hostQueueNames: [
      outboundQueueName
      '${outboundQueueName}-poison'
      eventsQueueName
      webhookQueueName
      '${webhookQueueName}-poison'
    ]
    userPrincipalId: principalId
    userPrincipalType: principalType
    deployerDataAccess: deployerDataAccess
    tokenKeyName: keyVault.outputs.tokenKeyName
    outboundQueueName: outboundQueueName
    eventsQueueName: eventsQueueName
    producerPrincipalIds: producerPrincipalIds
    eventReaderPrincipalIds: eventReaderPrincipalIds
    eventReaderRole: eventReaderRole
  }
}

// Outputs azd writes into .azure/<env>/.env (`azd env get-values`); none carries a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CLOUD string = effectiveCloud
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output PUBLIC_BASE_URL string = publicBaseUrl
output ENTRA_CLIENT_ID string = effectiveEntraClientId
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output KEY_VAULT_URL string = keyVault.outputs.uri
output KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
