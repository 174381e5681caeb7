package taskstore

import "encoding/json"

// Outcome is the response of one task, for Store.FinishMany.
type Outcome struct {
	ID       string
	Response json.RawMessage
}
