"""Following an organization's change events: AWS Organizations records its calls in CloudTrail,
an EventBridge rule delivers them to the integration's SQS queue, and discovery reads the queue.

Events are hints, the API is the truth: an event only names the accounts and OUs that may have
changed; discovery reads those from the Organizations API, patches the last snapshot it applied,
and applies the result through the integration service exactly as a full crawl's (handles,
permissions, tree events, the generation check, the deletion guard). Whenever a refresh cannot be
made consistent it asks for one full crawl instead.

- `parsing`: an SQS message body → the entities an event names, or why it is dropped (pure);
- `batching`: a burst of messages → what one refresh reads (pure);
- `patching`: the stored snapshot + what the API said → the new snapshot, or why not (pure);
- `refresh`: reading the named entities from the Organizations API;
- `follower`: one queue: long polling, batches, refreshes, runs, the queue's status;
- `consumer`: which replica follows which queue (leases in PostgreSQL);
- `metrics`: what is exported to Prometheus.
"""
