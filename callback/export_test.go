package callback

// Spills returns how many request bodies Wrap has spilled to a temporary
// file so far.
func Spills() int64 { return spills.Load() }

// SpillAt is the number of body bytes Wrap holds in memory before spilling.
const SpillAt = spillAt
