//go:build !unix

package main

import "time"

func raiseFileLimit() {}

func processCPU() time.Duration { return 0 }
