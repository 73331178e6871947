// MLLP framing. The reader keeps one buffer of unconsumed bytes and resumes its search for a
// frame's end where the last one stopped, so a frame fed a byte at a time costs linear time.
#include "hl7v2/mllp.hpp"

namespace tellonce::hl7v2 {

std::string mllp_frame(std::string_view message) {
  std::string out;
  out.reserve(message.size() + 4);
  out += kMllpStart;
  for (std::size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') continue;  // CRLF -> CR
    out += c == '\n' ? '\r' : c;
  }
  if (out.size() > 1 && out.back() != '\r') out += '\r';  // the last segment ends like the others
  out += kMllpEnd1;
  out += kMllpEnd2;
  return out;
}

FrameReader::FrameReader(std::size_t max_frame_bytes) : max_(max_frame_bytes) {}

void FrameReader::feed(std::string_view bytes) {
  if (pos_ > 0) {
    buffer_.erase(0, pos_);
    scan_ -= pos_;
    pos_ = 0;
  }
  buffer_.append(bytes);
}

bool FrameReader::inside_frame() const { return inside_; }

std::optional<FrameEvent> FrameReader::next() {
  while (true) {
    if (!inside_) {
      if (pos_ >= buffer_.size()) return std::nullopt;
      const std::size_t start = buffer_.find(kMllpStart, pos_);
      const std::size_t stray = (start == std::string::npos ? buffer_.size() : start) - pos_;
      if (start != std::string::npos) {
        pos_ = start + 1;
        scan_ = pos_;
        inside_ = true;
        skipping_large_ = false;
      } else {
        pos_ = buffer_.size();
      }
      if (stray > 0) return FrameEvent{FrameEvent::Kind::stray_bytes, {}, stray};
      continue;
    }

    // Inside a frame: look for FS (normally followed by CR), or a new VT that cuts this frame off.
    std::size_t i = scan_;
    while (i < buffer_.size() && buffer_[i] != kMllpEnd1 && buffer_[i] != kMllpStart) ++i;
    if (i >= buffer_.size()) {
      scan_ = i;
      if (!skipping_large_ && buffer_.size() - pos_ > max_) {
        skipping_large_ = true;
        const std::size_t so_far = buffer_.size() - pos_;
        buffer_.clear();
        pos_ = scan_ = 0;
        return FrameEvent{FrameEvent::Kind::too_large, {}, so_far};
      }
      if (skipping_large_) {
        buffer_.clear();
        pos_ = scan_ = 0;
      }
      return std::nullopt;
    }
    if (buffer_[i] == kMllpStart) {
      // A new frame starts before this one ended: the sender gave up on it. Drop what it sent.
      const std::size_t cut = i - pos_;
      const bool was_skipping = skipping_large_;
      pos_ = i;
      inside_ = false;
      skipping_large_ = false;
      // The cut frame's bytes, its VT included, are reported as stray (unless already reported as too large).
      if (!was_skipping) return FrameEvent{FrameEvent::Kind::stray_bytes, {}, cut + 1};
      continue;
    }
    // FS: the end, with the CR that should follow it.
    if (i + 1 >= buffer_.size()) {
      scan_ = i;  // wait for the byte after FS
      if (!skipping_large_ && i - pos_ > max_) {
        skipping_large_ = true;
        const std::size_t so_far = i - pos_;
        buffer_.erase(0, i);
        pos_ = scan_ = 0;
        return FrameEvent{FrameEvent::Kind::too_large, {}, so_far};
      }
      return std::nullopt;
    }
    const std::size_t length = i - pos_;
    const std::size_t message_begin = pos_;
    // FS without its CR still ends the frame; the byte after it is then outside any frame.
    pos_ = buffer_[i + 1] == kMllpEnd2 ? i + 2 : i + 1;
    inside_ = false;
    if (skipping_large_) {
      skipping_large_ = false;
      continue;
    }
    if (length > max_) return FrameEvent{FrameEvent::Kind::too_large, {}, length};
    return FrameEvent{FrameEvent::Kind::message, buffer_.substr(message_begin, length), 0};
  }
}

}  // namespace tellonce::hl7v2
