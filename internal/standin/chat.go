package standin

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// chatModel is the model named in a chat answer when the request named none.
const chatModel = "standin-image"

// chatSide is the size of the images of chat answers.
const chatSide = 1024

type chatAnswer struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             chatUsage    `json:"usage"`
	SystemFingerprint *string      `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatMessage `json:"message"`
	Logprobs     *struct{}   `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type chatMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// serveChat answers POST chat/completions: the text of the last user
// message is the prompt of one 1024x1024 image, linked from the answer's
// message content in Markdown. Parameters other than messages, model and
// stream are ignored.
func (g *Generator) serveChat(w http.ResponseWriter, r *http.Request) {
	m, e := readJSON(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	fs := jsonFields(m)
	if e = optionalString(fs, "model"); e != nil {
		writeError(w, e)
		return
	}
	if e = noStream(fs); e != nil {
		writeError(w, e)
		return
	}
	prompt, e := chatPrompt(m["messages"])
	if e != nil {
		writeError(w, e)
		return
	}
	if !g.wait(w, r) {
		return
	}
	name := g.register(newPicture(promptSeed(prompt, nil), 0, chatSide))
	content := "![image](" + g.fileURL(r, name) + ")"
	model := chatModel
	if f := fs["model"]; f.kind == "string" && f.str != "" {
		model = f.str
	}
	pt, ct := len(strings.Fields(prompt)), len(strings.Fields(content))
	writeJSON(w, http.StatusOK, chatAnswer{
		ID:      "chatcmpl-" + rand.Text(),
		Object:  "chat.completion",
		Created: g.now().Unix(),
		Model:   model,
		Choices: []chatChoice{{
			Message:      chatMessage{Role: "assistant", Content: content},
			FinishReason: "stop",
		}},
		Usage: chatUsage{PromptTokens: pt, CompletionTokens: ct, TotalTokens: pt + ct},
	})
}

// chatPrompt returns the text of the last user message of messages: its
// string content, or its text parts joined by newlines.
func chatPrompt(raw json.RawMessage) (string, *apiError) {
	f := jsonField(raw)
	if raw == nil || f.kind == "null" {
		return "", invalid("messages", "Missing required parameter: 'messages'.")
	}
	if f.kind != "array" {
		return "", typeError("messages", "array", f)
	}
	var msgs []json.RawMessage
	json.Unmarshal(raw, &msgs) // valid: the whole body was checked
	if len(msgs) == 0 {
		return "", invalid("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	prompt, found := "", false
	for i, mr := range msgs {
		param := fmt.Sprintf("messages[%d]", i)
		if f := jsonField(mr); f.kind != "object" {
			return "", typeError(param, "object", f)
		}
		var msg map[string]json.RawMessage
		json.Unmarshal(mr, &msg)
		role := jsonField(msg["role"])
		if _, ok := msg["role"]; !ok || role.kind == "null" {
			return "", invalid(param+".role", "Missing required parameter: '%s.role'.", param)
		}
		if role.kind != "string" {
			return "", typeError(param+".role", "string", role)
		}
		text, e := messageText(param, msg["content"])
		if e != nil {
			return "", e
		}
		if role.str == "user" {
			prompt, found = text, true
		}
	}
	if !found {
		return "", invalid("messages", "Invalid 'messages': the stand-in draws the last user message, and there is none.")
	}
	return checkPrompt("messages", prompt)
}

// messageText returns the text of a message's content: a string, or an
// array of parts whose "text" parts are joined by newlines.
func messageText(param string, raw json.RawMessage) (string, *apiError) {
	f := jsonField(raw)
	switch f.kind {
	case "null":
		return "", nil
	case "string":
		return f.str, nil
	case "array":
	default:
		return "", typeError(param+".content", "string", f)
	}
	var parts []json.RawMessage
	json.Unmarshal(raw, &parts)
	var texts []string
	for j, pr := range parts {
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		if f := jsonField(pr); f.kind != "object" {
			return "", typeError(pp, "object", f)
		}
		var part map[string]json.RawMessage
		json.Unmarshal(pr, &part)
		if t := jsonField(part["type"]); t.kind != "string" || t.str != "text" {
			continue // images, audio, files: nothing to draw from
		}
		t := jsonField(part["text"])
		if t.kind != "string" {
			return "", typeError(pp+".text", "string", t)
		}
		texts = append(texts, t.str)
	}
	return strings.Join(texts, "\n"), nil
}
