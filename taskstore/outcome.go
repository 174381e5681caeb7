package taskstore

import "encoding/json"

// Outcome is the response of one task, for Store.FinishMany.
type Outcome struct {
	ID       string
	Response json.RawMessage
}

// CheckOutcomes checks the argument of Store.FinishMany: it gives ErrInvalid
// (naming the position) when a response is not valid JSON, and otherwise
// returns the outcomes without the later ones of an id listed more than
// once (the first response of an id wins). The list it returns is outcomes
// itself when no id repeats.
func CheckOutcomes(outcomes []Outcome) ([]Outcome, error) {
	var seen map[string]bool
	dups := false
	for i, o := range outcomes {
		if !validJSON(o.Response) {
			return nil, Invalidf("outcome %d: response must be valid JSON in UTF-8", i)
		}
		if len(outcomes) > 1 {
			if seen == nil {
				seen = make(map[string]bool, len(outcomes))
			}
			dups = dups || seen[o.ID]
			seen[o.ID] = true
		}
	}
	if !dups {
		return outcomes, nil
	}
	out := make([]Outcome, 0, len(seen))
	clear(seen)
	for _, o := range outcomes {
		if !seen[o.ID] {
			seen[o.ID] = true
			out = append(out, o)
		}
	}
	return out, nil
}
