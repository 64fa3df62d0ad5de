package audit

// Network rule events (tunnel admin network; docs/NETWORK.md). Subject is
// the rule's ID; Details hold effect, cidr, listener and comment.
const (
	NetworkRuleAdded   Type = "network.rule_added"
	NetworkRuleRemoved Type = "network.rule_removed"
)
