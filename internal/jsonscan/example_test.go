package jsonscan_test

import (
	"fmt"

	"github.com/tasksapi/tasks/internal/jsonscan"
)

// Walking the members of a compact JSON object without decoding it.
func Example() {
	obj := []byte(`{"prompt":"a \"cat\"","n":2,"size":{"w":1024,"h":1024}}`)
	for i := 1; i < len(obj) && obj[i] != '}'; {
		kEnd := jsonscan.SkipString(obj, i)
		vEnd := jsonscan.SkipValue(obj, kEnd+1)
		fmt.Printf("%s = %s\n", jsonscan.Unquote(obj[i:kEnd]), obj[kEnd+1:vEnd])
		i = vEnd
		if obj[i] == ',' {
			i++
		}
	}
	// Output:
	// prompt = "a \"cat\""
	// n = 2
	// size = {"w":1024,"h":1024}
}
