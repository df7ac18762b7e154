// Every app setting Mailbridge reads in Azure, in one object (`settings`: `coreSettings` plus the
// per-mailbox limits main.bicep passes as `limitSettings`) so that tests compare it with the names
// shared/base/settings.py expects. Identity-based everywhere: no storage key, no
// client secret, no instrumentation key used as a credential. ENTRA_CLIENT_SECRET,
// ENTRA_AUTHORITY_HOST and GRAPH_ENDPOINT are deliberately absent (local/emulator only).
param functionAppName string
param storageAccountName string
param applicationInsightsName string

@description('Client id of the app\'s user-assigned managed identity (the code: storage mail data, Entra, Key Vault).')
param identityClientId string

@description('Client id of the Functions host\'s user-assigned identity (AzureWebJobsStorage).')
param hostIdentityClientId string
param keyVaultUrl string

@description('Name of the Key Vault key wrapping the token caches\' data keys.')
param keyVaultKeyName string

@description('Versionless URI of the ticket signing key secret.')
param ticketKeySecretUri string
param entraClientId string
param entraTenant string

@allowed([
  'public'
  'usgov'
  'usgovdod'
  'china'
])
param azureCloud string

@description('https://<function app host>.')
param publicBaseUrl string
param allowedReturnOrigins string
@description('CALLBACK_QUEUES: the callback queues producers may name besides the events queue.')
param callbackQueues string
@description('TENANT_EXTERNAL_RECIPIENT_LIMITS: per-tenant external-recipient budgets (JSON; empty: off).')
param tenantExternalRecipientLimits string
param outboundQueueName string
param eventsQueueName string
param webhookQueueName string
@description('WEBHOOK_URL (empty: no webhooks).')
param webhookUrl string
@description('Versionless URI of the webhook secret in Key Vault (empty when there is none).')
param webhookSecretUri string
@allowed([
  'none'
  'base64'
])
param eventsMessageEncoding string
param attachmentsContainerName string
param refreshAfterDays int
param refreshSchedule string
param enableSharedMailboxes bool
param enableMailReadWrite bool
param maxMessageBytes int

@description('Per-mailbox limit settings (name: value), built in main.bicep\'s "Scale and sending limits" block.')
param limitSettings object

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var coreSettings = {
  // Functions host storage through the host's identity (no connection string). The app's code reads only the
  // endpoints below and signs in as MANAGED_IDENTITY_CLIENT_ID, which reaches the mail data only (issue 23).
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: hostIdentityClientId
  // The app's own queue/table/blob clients read these endpoints.
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // Telemetry destination; with local auth disabled it is not a credential: ingestion needs the
  // Entra token selected by the authentication string.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Identity and clouds.
  ENTRA_CLIENT_ID: entraClientId
  ENTRA_TENANT: entraTenant
  // Where the app registration lives (the deploying tenant): the app's own credential is checked there before a
  // refused refresh is blamed on it (docs/settings.md ENTRA_HOME_TENANT).
  ENTRA_HOME_TENANT: tenant().tenantId
  AZURE_CLOUD: azureCloud
  ENTRA_CLIENT_CREDENTIAL: 'managed_identity'
  MANAGED_IDENTITY_CLIENT_ID: identityClientId
  KEY_VAULT_URL: keyVaultUrl
  KEY_VAULT_AUTH: 'managed_identity'
  KEY_VAULT_KEY_NAME: keyVaultKeyName
  TICKET_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${ticketKeySecretUri})'
  // Queues, blobs, endpoints.
  OUTBOUND_QUEUE: outboundQueueName
  EVENTS_QUEUE: eventsQueueName
  ATTACHMENTS_CONTAINER: attachmentsContainerName
  PUBLIC_BASE_URL: publicBaseUrl
  ALLOWED_RETURN_ORIGINS: allowedReturnOrigins
  CALLBACK_QUEUES: callbackQueues
  TENANT_EXTERNAL_RECIPIENT_LIMITS: tenantExternalRecipientLimits
  EVENTS_MESSAGE_ENCODING: eventsMessageEncoding
  // Signed webhooks (docs/events.md): the secret through Key Vault; private targets never in Azure (SSRF).
  WEBHOOK_URL: webhookUrl
  WEBHOOK_SECRET: empty(webhookSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
  WEBHOOK_ALLOW_PRIVATE_TARGETS: 'false'
  WEBHOOK_QUEUE: webhookQueueName
  // Keep-alive timer and limits.
  REFRESH_AFTER_DAYS: string(refreshAfterDays)
  REFRESH_SCHEDULE: refreshSchedule
  MAX_MESSAGE_BYTES: string(maxMessageBytes)
  SEND_AS_ENDPOINT: 'me'
  // Scope switches (lower-case strings; Bicep's string(bool) would give 'True').
  ENABLE_SHARED_MAILBOXES: enableSharedMailboxes ? 'true' : 'false'
  ENABLE_MAIL_READWRITE: enableMailReadWrite ? 'true' : 'false'
  ENABLE_SAMPLE_UI: 'false'
}

// Every setting: the fixed ones above plus the per-mailbox limits (MAILBOX_*) from main.bicep.
var settings = union(coreSettings, limitSettings)

// checkov reads this appsettings config as if it were the site's web config; the skips below say
// why each of those web-config checks does not apply. (pycep, checkov's parser, accepts at most
// four comment lines in a row, hence the grouping.)
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: App Service Authentication does not apply; users sign in through the app's own OAuth flow and APIs use function keys.
  // checkov:skip=CKV_AZURE_63: HTTP logging is a web config property (App Service logs), not an app setting; telemetry goes to Application Insights.
  // checkov:skip=CKV_AZURE_65: detailed error pages are a web config property, not an app setting.
  parent: functionApp
  // checkov:skip=CKV_AZURE_66: failed request tracing is a web config property, not an app setting.
  // checkov:skip=CKV_AZURE_80: .NET Framework version does not apply to a Python app.
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_88: Flex Consumption deploys from a blob container; there is no Azure Files content share.
  // checkov:skip=CKV_AZURE_222: public network access is a site property; see core/host/functions-flexconsumption.bicep.
  properties: settings
}

output names array = [for setting in items(settings): setting.key]
