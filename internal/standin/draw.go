package standin

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"sync"
)

// picture is what to draw: the seed of one image and its resolution.
type picture struct {
	seed [32]byte // SHA-256 of the request's seed and the image's index
	side int
}

// promptSeed is the seed of a request: the SHA-256 of its prompt, followed,
// for edits, by the SHA-256 of each input image.
func promptSeed(prompt string, images [][]byte) [32]byte {
	if len(images) == 0 {
		return sha256.Sum256([]byte(prompt))
	}
	h := sha256.New()
	io.WriteString(h, prompt)
	for _, im := range images {
		h.Write([]byte{0})
		h.Write(im)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func newPicture(seed [32]byte, index, side int) picture {
	var b [36]byte
	copy(b[:], seed[:])
	binary.BigEndian.PutUint32(b[32:], uint32(index))
	return picture{seed: sha256.Sum256(b[:]), side: side}
}

// name is the file name under which Files serves the picture: the
// HMAC-SHA256, under key, of its seed and side, so that nobody without the
// key can tell the name of a prompt's picture.
func (p picture) name(key []byte) string {
	var b [36]byte
	copy(b[:], p.seed[:])
	binary.BigEndian.PutUint32(b[32:], uint32(p.side))
	m := hmac.New(sha256.New, key)
	m.Write(b[:])
	return hex.EncodeToString(m.Sum(nil)[:16]) + ".png"
}

// draw renders the picture: a linear gradient between two colours at an
// angle, a disc of a third colour and a ring around it, all placed by the
// seed in coordinates relative to the side so that every size shows the
// same picture. The image is paletted (254 gradient steps, the disc and the
// ring): it encodes several times faster than a true-colour one.
func (p picture) draw() *image.Paletted {
	s := p.seed
	side := p.side
	pal := make(color.Palette, gradientSteps+2)
	for i := range gradientSteps {
		t := float64(i) / (gradientSteps - 1)
		pal[i] = color.NRGBA{lerp(s[0], s[3], t), lerp(s[1], s[4], t), lerp(s[2], s[5], t), 0xff}
	}
	const disc, ring = gradientSteps, gradientSteps + 1
	pal[disc] = color.NRGBA{s[6], s[7], s[8], 0xff}
	pal[ring] = color.NRGBA{255 - s[6], 255 - s[7], 255 - s[8], 0xff}
	img := image.NewPaletted(image.Rect(0, 0, side, side), pal)

	angle := 2 * math.Pi * float64(binary.BigEndian.Uint16(s[9:11])) / 65536
	cos, sin := math.Cos(angle)/math.Sqrt2, math.Sin(angle)/math.Sqrt2
	cx := 0.2 + 0.6*float64(s[11])/255
	cy := 0.2 + 0.6*float64(s[12])/255
	r := 0.1 + 0.2*float64(s[13])/255
	ringIn, ringOut := r*1.25, r*1.25+0.02
	r2, in2, out2 := r*r, ringIn*ringIn, ringOut*ringOut

	inv := 1 / float64(side)
	for y := range side {
		v := (float64(y) + 0.5) * inv
		dy2 := (v - cy) * (v - cy)
		row := img.Pix[y*img.Stride : y*img.Stride+side]
		for x := range row {
			u := (float64(x) + 0.5) * inv
			switch d2 := (u-cx)*(u-cx) + dy2; {
			case d2 < r2:
				row[x] = disc
			case d2 >= in2 && d2 < out2:
				row[x] = ring
			default:
				t := (u-0.5)*cos + (v-0.5)*sin + 0.5 // in [0, 1]
				row[x] = uint8(t*(gradientSteps-1) + 0.5)
			}
		}
	}
	return img
}

// gradientSteps is the number of palette entries of the gradient.
const gradientSteps = 254

func lerp(a, b uint8, t float64) uint8 {
	return uint8(float64(a) + (float64(b)-float64(a))*t + 0.5)
}

// encoder encodes PNGs fast, reusing its buffers.
var encoder = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &bufferPool{}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() *png.EncoderBuffer {
	eb, _ := b.p.Get().(*png.EncoderBuffer)
	return eb
}
func (b *bufferPool) Put(eb *png.EncoderBuffer) { b.p.Put(eb) }

// encode draws and encodes the picture.
func (p picture) encode() []byte {
	var buf bytes.Buffer
	if err := encoder.Encode(&buf, p.draw()); err != nil {
		// Encoding an in-memory paletted image into a bytes.Buffer cannot fail.
		panic("standin: encoding a PNG: " + err.Error())
	}
	return buf.Bytes()
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// hashReader returns the SHA-256 of what r yields and its length.
func hashReader(r io.Reader) ([]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return h.Sum(nil), n, err
}
