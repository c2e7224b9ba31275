"""Getting committed events to the subscriptions: the publisher actor and its listener."""
