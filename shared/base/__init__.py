"""The base every other package stands on: the settings (one frozen dataclass built from the environment), the
one exception tree (errors), the Azure clients and credentials (storage, identity, clouds), telemetry and the log
policy, the JSON limits, the shared spellings of keys, queue names and times (formats), and the outcome-event
publisher (events: CloudEvents on EVENTS_QUEUE, fed plain data by whoever has an outcome to tell).

May import: nothing
"""
