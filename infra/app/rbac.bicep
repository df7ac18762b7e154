// Role assignments, least privilege, each scoped to the one resource it is for. Two identities
// (issue 23): the app identity, which the Python code uses and which reads blobs by names producers
// give, reaches only the mail data: its two containers, its four tables, and message-send on queues.
// The Functions host's identity (AzureWebJobsStorage, the deployment package) holds Storage Blob Data
// Owner on the account, as the host needs, but never handles a producer's blob name. So no path
// confusion in the app can read or delete the deployment package or the host's key and lease
// containers. The deploying principal (principalId) gets no data role unless deployerDataAccess asks
// (issue 26: nobody holds standing access to tokens; docs/security.md).
// Producers get send-only access to the outbound queue, and event readers access to the events
// queue only (docs/producers.md). Names are guid(scope, principal, role): re-deploys are no-ops.
param storageAccountName string
param keyVaultName string
param applicationInsightsName string

@description('Principal id of the app\'s user-assigned managed identity (the Python code: Storage mail data, Key Vault, telemetry).')
param appPrincipalId string

@description('Principal id of the Functions host\'s user-assigned identity (AzureWebJobsStorage and the deployment package).')
param hostPrincipalId string

@description('Blob containers the app reads and writes (attachments, refresh locks): its only blob access.')
param appContainerNames array

@description('Tables the app reads and writes.')
param appTableNames array

@description('Queues the Functions host triggers on or writes through bindings (outbound, its poison queue, events).')
param hostQueueNames array

@description('Object id of the deploying user or CI principal; empty skips its assignments.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

@description('Give userPrincipalId data roles (Storage, Key Vault secrets, unwrap with the token key) for local runs. RISK: they can then read and redeem every connection\'s refresh token. Default false.')
param deployerDataAccess bool = false

@description('Name of the Key Vault key wrapping the token caches\' data keys.')
param tokenKeyName string

@description('Name of the outbound queue producers may send to.')
param outboundQueueName string

@description('Name of the events queue event readers may read.')
param eventsQueueName string

@description('Object ids of managed identities / service principals that may put messages on the outbound queue (and nothing else).')
param producerPrincipalIds array = []

@description('Object ids of managed identities / service principals that may read the events queue.')
param eventReaderPrincipalIds array = []

@allowed([
  'MessageProcessor'
  'Reader'
])
@description('What event readers may do: MessageProcessor peeks, receives and deletes (consumes); Reader only peeks and reads.')
param eventReaderRole string = 'MessageProcessor'

var roles = {
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
  keyVaultCryptoServiceEncryptionUser: 'e147488a-f6f5-4113-8e2d-b22465e65bf6' // Key Vault Crypto Service Encryption User
  keyVaultCryptoUser: '12338af0-0e69-4776-bea7-57ae8d297424' // Key Vault Crypto User
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
  storageQueueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed' // Storage Queue Data Message Processor
  storageQueueDataReader: '19e7f393-937e-4f77-808e-94535e297925' // Storage Queue Data Reader
}

var assignUser = deployerDataAccess && !empty(userPrincipalId)
var eventReaderRoleId = (eventReaderRole == 'Reader') ? roles.storageQueueDataReader : roles.storageQueueDataMessageProcessor

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource outboundQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: outboundQueueName
}

resource eventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: eventsQueueName
}

resource hostQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queue in hostQueueNames: {
  parent: queueService
  name: queue
}]

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for container in appContainerNames: {
  parent: blobService
  name: container
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource appTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = [for table in appTableNames: {
  parent: tableService
  name: table
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource tokenKey 'Microsoft.KeyVault/vaults/keys@2023-07-01' existing = {
  parent: vault
  name: tokenKeyName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// --- the app's managed identity ---

// Key Vault Crypto Service Encryption User on the token key only: get the public key (wrap locally) and
// unwrap each connection's data key. The only identity that can open a sealed token cache (issue 26).
resource appKeyVaultCryptoServiceEncryptionUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(tokenKey.id, appPrincipalId, roles.keyVaultCryptoServiceEncryptionUser)
  scope: tokenKey
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCryptoServiceEncryptionUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer: the ticket signing key (a Key Vault reference), and the upgrade path, which
// reads each pre-issue-26 plain token-cache secret once, seals it into Storage and deletes it.
resource appKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Message Sender on the account: POST /api/messages enqueues to outbound-mail,
// events go to mail-events, and a message's callback queue may be any queue of the account
// (shared/base/events.py refuses the host's and the outbound queues). Add only: no read, peek or delete.
resource appStorageQueueDataMessageSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageQueueDataMessageSender)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor on each of the app's tables (connections, authflows, deliveries,
// mailboxbudgets, tokencaches, parkedmessages), not the account.
resource appStorageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (table, i) in appTableNames: {
  name: guid(appTables[i].id, appPrincipalId, roles.storageTableDataContributor)
  scope: appTables[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Blob Data Contributor on mail-attachments and mailbridge-locks only: attachment blobs
// (read by producer-given names) and refresh leases. Not the deployment package container, not
// azure-webjobs-hosts / azure-webjobs-secrets: a blob name that escaped its container would find
// nothing this identity may read or delete (issue 23).
resource appStorageBlobDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (container, i) in appContainerNames: {
  name: guid(appContainers[i].id, appPrincipalId, roles.storageBlobDataContributor)
  scope: appContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Monitoring Metrics Publisher: Entra-authenticated telemetry (App Insights local auth is off).
resource appMonitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the Functions host's identity (AzureWebJobsStorage__clientId, deployment storage) ---

// Storage Blob Data Owner on the account: what Microsoft documents for host storage with an identity
// (Functions reference, "Connecting to host storage with an identity": the host creates and uses
// azure-webjobs-hosts and azure-webjobs-secrets, timer locks, keys) and the Flex Consumption
// deployment package container.
resource hostStorageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, hostPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor on the queues of the bindings only: the outbound-mail trigger
// (receive, delete, move to outbound-mail-poison), the poison trigger, the mail-events output.
resource hostStorageQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queue, i) in hostQueueNames: {
  name: guid(hostQueues[i].id, hostPrincipalId, roles.storageQueueDataContributor)
  scope: hostQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Table Data Contributor on the account: the host's diagnostic events tables
// (AzureFunctionsDiagnosticEvents<yyyyMM>, created monthly), per the same Microsoft page.
resource hostStorageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, hostPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the deploying principal: only with deployerDataAccess (local runs against these resources) ---

// Key Vault Crypto User on the token key: unwrap, so a local run can open the sealed caches.
resource userKeyVaultCryptoUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(tokenKey.id, userPrincipalId, roles.keyVaultCryptoUser)
  scope: tokenKey
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCryptoUser)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Key Vault Secrets Officer
resource userKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(vault.id, userPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Queue Data Contributor
resource userStorageQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(storage.id, userPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Table Data Contributor
resource userStorageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(storage.id, userPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Blob Data Owner
resource userStorageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(storage.id, userPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Monitoring Metrics Publisher
resource userMonitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignUser) {
  name: guid(applicationInsights.id, userPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// --- producers and event readers (queue-scoped: no access to any other queue, table or blob) ---

// Storage Queue Data Message Sender on the outbound queue only: a producer can add messages, not
// read, peek, delete or clear them, and reaches no other queue (not the poison queue, not events).
resource producerMessageSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for producerId in producerPrincipalIds: {
  name: guid(outboundQueue.id, producerId, roles.storageQueueDataMessageSender)
  scope: outboundQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: producerId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Queue Data Message Processor (or Reader) on the events queue only.
resource eventReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for readerId in eventReaderPrincipalIds: {
  name: guid(eventsQueue.id, readerId, eventReaderRoleId)
  scope: eventsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventReaderRoleId)
    principalId: readerId
    principalType: 'ServicePrincipal'
  }
}]
