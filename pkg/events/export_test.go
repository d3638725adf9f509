package events

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// CommonAgrees reports whether parseCommon read b itself and, if it did,
// an error unless encoding/json reads the same fields from b.
func CommonAgrees(b []byte) (took bool, err error) {
	fast, ok := parseCommon(b)
	if !ok {
		return false, nil
	}
	var slow wireEnvelope
	if err := json.Unmarshal(b, &slow); err != nil {
		return true, fmt.Errorf("encoding/json refuses what the common form took: %v", err)
	}
	if !reflect.DeepEqual(fast, slow) {
		return true, fmt.Errorf("fields differ:\ncommon form   %+v\nencoding/json %+v", fast, slow)
	}
	return true, nil
}
