// Alerts for the operator: one action group (email when alertEmail is set) and one rule per thing that
// needs a person. Log alerts run the KQL in queries/*.kql against Application Insights (the same text is
// in docs/operations.md, to run by hand); the storage alert is a platform metric of the storage account.
// Nothing here reads or holds a key: the rules reference resources by id and the alert service queries
// them itself.
param namePrefix string
param actionGroupName string
param location string
param tags object = {}

param applicationInsightsName string
param storageAccountName string

@description('The Key Vault holding the token-cache key: its AuditEvent logs go to the workspace.')
param keyVaultName string

@description('The Log Analytics workspace receiving the Key Vault audit logs.')
param logAnalyticsName string

@description('Object id of the app identity: the only principal expected to read token secrets or unwrap.')
param appPrincipalId string

@description('Operator email for every alert. Empty: the action group has no receiver (alerts still fire and show in the portal).')
param alertEmail string = ''

@minValue(1)
@description('Connections needing reauth within an hour before the reauth_required alert fires (a revoked consent or a tenant policy change shows as many at once).')
param reauthRequiredThreshold int = 5

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

// Key Vault's AuditEvent (every data-plane call: who, what, which object) to the workspace, in the
// resource-specific table AZKVAuditLogs (https://learn.microsoft.com/azure/azure-monitor/reference/tables/azkvauditlogs).
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalytics.id
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'mailbridge'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// One entry per log alert: what it watches (queries/<key>.kql), how often, over what window, and the row
// count it must exceed. Severity: 0 critical ... 4 verbose.
var logAlerts = [
  {
    key: 'poison-messages'
    displayName: 'Mailbridge: messages moved to the poison queue'
    description: 'The Functions host gave up on a message after 5 failed attempts; it was recorded failed or unknown. Look up its logs by message id (docs/operations.md).'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('queries/poison-messages.kql')
  }
  {
    key: 'unknown-outcomes'
    displayName: 'Mailbridge: sends with an unknown outcome'
    description: 'Graph may or may not have sent these messages; they were not resent. Check the mailboxes\' Sent Items.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('queries/unknown-outcomes.kql')
  }
  {
    key: 'reauth-required'
    displayName: 'Mailbridge: many connections need reauthentication'
    description: 'More connections than the threshold failed with reauth_required within an hour (revoked consent, password resets, a Conditional Access change).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    threshold: reauthRequiredThreshold
    query: loadTextContent('queries/reauth-required.kql')
  }
  {
    key: 'credential-failures'
    displayName: 'Mailbridge: Entra refused the app credential'
    description: 'The app registration\'s credential (federated credential or secret) was refused or the registration is misconfigured: no mailbox can send or connect until the operator fixes it.'
    severity: 0
    frequency: 'PT5M'
    window: 'PT5M'
    threshold: 0
    query: loadTextContent('queries/credential-failures.kql')
  }
  {
    key: 'function-failures'
    displayName: 'Mailbridge: function failures'
    description: 'Function invocations failed (exceptions or HTTP 5xx). Queue messages are retried by the host, then go to the poison queue.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('queries/function-failures.kql')
  }
  {
    key: 'health-503'
    displayName: 'Mailbridge: health check answers 503'
    description: 'GET /api/health answered 503: an app setting is missing or malformed (the response names it).'
    severity: 1
    frequency: 'PT5M'
    window: 'PT5M'
    threshold: 0
    query: loadTextContent('queries/health-503.kql')
  }
  {
    key: 'webhook-failures'
    displayName: 'Mailbridge: webhook deliveries failed'
    description: 'Outcome events could not be delivered to WEBHOOK_URL after all attempts (about 4.5 hours), or the target was refused as private. The events are on the events queue; the deliveries on the webhook poison queue (docs/events.md).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    threshold: 0
    query: loadTextContent('queries/webhook-failures.kql')
  }
]

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in logAlerts: {
  name: '${namePrefix}-${alert.key}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    evaluationFrequency: alert.frequency
    windowSize: alert.window
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

// Storage answering with throttling or server errors: every message costs several Storage operations,
// so this is the first sign of an account at its limits (a platform metric, no query).
resource storageErrors 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-storage-errors'
  location: 'global'
  tags: tags
  properties: {
    description: 'The storage account answered with throttling, timeout or server errors (queues, tables, blobs).'
    severity: 2
    enabled: true
    scopes: [
      storage.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttledOrFailed'
          metricNamespace: 'Microsoft.Storage/storageAccounts'
          metricName: 'Transactions'
          dimensions: [
            {
              name: 'ResponseType'
              operator: 'Include'
              values: [
                'ServerBusyError'
                'ClientThrottlingError'
                'ServerTimeoutError'
                'ServerOtherError'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// Anyone but the app identity reading or recovering a secret, or unwrapping a key: a person (or a stolen
// credential) looking at tokens. Queries the workspace the vault audits to (not Application Insights).
resource tokenAccessAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-token-access'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailbridge: someone other than the app read a token secret or unwrapped a key'
    description: 'A principal other than the app identity read or recovered a Key Vault secret, or unwrapped / recovered a key. Only the app should ever open a sealed token cache (docs/security.md).'
    severity: 1
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    scopes: [
      logAnalytics.id
    ]
    criteria: {
      allOf: [
        {
          query: replace(loadTextContent('queries/token-access.kql'), 'APP_PRINCIPAL_ID', appPrincipalId)
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
  dependsOn: [
    vaultAudit
  ]
}

output actionGroupId string = actionGroup.id
output logAlertKeys array = [for alert in logAlerts: alert.key]
