// Command segd is the streaming customer segmentation engine.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "segd: not built yet")
	os.Exit(2)
}
