package main

import (
	"errors"
	"strconv"
	"strings"
)

// byteSize is a flag.Value holding a number of bytes, written as an integer
// with an optional binary suffix: 65536, 64KiB, 32MiB, 1GiB.
type byteSize int64

var byteUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range byteUnits {
		if n != 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = num, u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return errors.New("want a number of bytes, optionally with KiB, MiB or GiB")
	}
	if n > (1<<62)/mult {
		return errors.New("too large")
	}
	*b = byteSize(n * mult)
	return nil
}
