// MLLP framing (HL7 v2 Minimal Lower Layer Protocol): <VT 0x0B> message <FS 0x1C><CR 0x0D>.
//
// Contract
// - Value types, no I/O: the transport reads bytes and feeds them; safe to use from one strand.
// - FrameReader takes bytes in whatever pieces the socket returns (a frame split across reads,
//   several frames in one read) and hands out whole messages in order. It never throws and
//   never grows past max_frame_bytes (plus one read): a longer frame is reported once as
//   too_large and its remaining bytes are skipped up to its end. Bytes outside a frame
//   (between frames, before the first) are skipped and reported, not treated as a message.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tellonce::hl7v2 {

inline constexpr char kMllpStart = '\x0b';
inline constexpr char kMllpEnd1 = '\x1c';
inline constexpr char kMllpEnd2 = '\x0d';

// The bytes to write for one message. LF and CRLF segment ends are sent as CR (what receivers
// expect); the message must not contain the MLLP control bytes (0x0B, 0x1C).
std::string mllp_frame(std::string_view message);

struct FrameEvent {
  enum class Kind {
    message,      // `message` holds one whole message, without the framing bytes
    too_large,    // a frame passed max_frame_bytes; its bytes are being skipped
    stray_bytes,  // `skipped` bytes outside any frame were dropped
  };
  Kind kind = Kind::message;
  std::string message;
  std::size_t skipped = 0;
};

class FrameReader {
 public:
  explicit FrameReader(std::size_t max_frame_bytes);
  void feed(std::string_view bytes);
  // The next event from what was fed so far, or nullopt when more bytes are needed.
  std::optional<FrameEvent> next();
  // True while a frame has started and not ended (the connection closing now cuts a message).
  bool inside_frame() const;

 private:
  std::size_t max_;
  std::string buffer_;
  std::size_t pos_ = 0;   // first unconsumed byte; inside a frame, the first byte of its message
  std::size_t scan_ = 0;  // inside a frame: where the search for its end resumes
  bool inside_ = false;
  bool skipping_large_ = false;
};

}  // namespace tellonce::hl7v2
