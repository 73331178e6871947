#include "rabbitmq_queue.hpp"

#include "memory_queue/memory_queue.hpp"
#include "tellonce/log.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tellonce {
namespace {

constexpr std::string_view component = "rabbitmq";
constexpr amqp_channel_t publish_channel = 1;  // confirm mode
constexpr amqp_channel_t admin_channel = 2;    // declarations
constexpr amqp_channel_t first_consume_channel = 10;  // one per destination consumed

Failure unavailable(std::string why) {
  return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", std::move(why), "", ""});
}

// FNV-1a, 64 bit: the same shard for a patient on every node and every build.
std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The message body: the job's fields as length-prefixed strings ("<len>:<bytes>"), in a fixed
// order. No body, nothing about the patient but its ordering key.
void put(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
}

std::string encode(const DeliveryJob& j) {
  std::string out;
  for (auto n : {j.delivery_id, j.seq, static_cast<std::int64_t>(j.attempts), j.not_before_ms, j.first_failed_at_ms})
    put(out, std::to_string(n));
  for (const auto* s : {&j.message_id, &j.destination, &j.patient_key, &j.resource_type, &j.content_type}) put(out, *s);
  return out;
}

bool take(std::string_view& in, std::string_view& field) {
  auto colon = in.find(':');
  if (colon == std::string_view::npos) return false;
  std::size_t len = 0;
  auto [p, ec] = std::from_chars(in.data(), in.data() + colon, len);
  if (ec != std::errc() || p != in.data() + colon || in.size() - colon - 1 < len) return false;
  field = in.substr(colon + 1, len);
  in.remove_prefix(colon + 1 + len);
  return true;
}

std::optional<DeliveryJob> decode(std::string_view in) {
  DeliveryJob j;
  std::int64_t attempts = 0;
  std::string_view f;
  for (auto* n : {&j.delivery_id, &j.seq, &attempts, &j.not_before_ms, &j.first_failed_at_ms}) {
    if (!take(in, f)) return std::nullopt;
    auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), *n);
    if (ec != std::errc() || p != f.data() + f.size()) return std::nullopt;
  }
  j.attempts = static_cast<int>(attempts);
  for (auto* s : {&j.message_id, &j.destination, &j.patient_key, &j.resource_type, &j.content_type}) {
    if (!take(in, f)) return std::nullopt;
    s->assign(f);
  }
  return j;
}

amqp_bytes_t bytes_of(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

std::string reply_error(const amqp_rpc_reply_t& r) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return "";
    case AMQP_RESPONSE_NONE: return "no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return "server closed the connection: " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return "server closed the channel: " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      return "server error";
  }
  return "unknown reply";
}

// A coroutine waiting for the thread: its handler, resumed on its own executor, whose work is
// counted until then so that its io_context does not run out under the thread.
class Completion {
 public:
  using Handler = asio::any_completion_handler<void(Result<void>)>;
  Completion(Handler h, const asio::any_io_executor& ex)
      : handler_(std::move(h)), executor_(asio::prefer(ex, asio::execution::outstanding_work.tracked)) {}

  void complete(Result<void> r) {
    if (!handler_) return;
    auto resume = [h = std::move(handler_), r = std::move(r)]() mutable { std::move(h)(std::move(r)); };
    asio::post(executor_, std::move(resume));
    executor_ = asio::any_io_executor();  // the work count ends after post() returned
  }

 private:
  Handler handler_;
  asio::any_io_executor executor_;
};

struct Command {
  enum class Kind { publish, ack, consume } kind = Kind::publish;
  std::string queue;        // publish: the target queue; consume: the destination
  std::string body;         // publish
  std::shared_ptr<Completion> done;  // publish
  // publish: after the confirm, ack this delivery (a dead letter); ack: the delivery to ack
  amqp_channel_t ack_channel = 0;
  std::uint64_t ack_tag = 0;
  std::uint64_t generation = 0;  // of the connection the delivery came on
};

// Where a job this node holds came from: its delivery tag on the channel and connection.
struct Held {
  amqp_channel_t channel = 0;
  std::uint64_t tag = 0;
  std::uint64_t generation = 0;
};

struct Core : std::enable_shared_from_this<Core> {
  Core(RabbitQueueSettings s, asio::any_io_executor ex)
      : settings(std::move(s)), executor(std::move(ex)), local(make_memory_queue(executor, 0)) {
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) throw std::runtime_error("rabbitmq queue: eventfd failed");
  }
  ~Core() {
    if (conn) amqp_destroy_connection(conn);
    ::close(wake_fd);
  }

  const RabbitQueueSettings settings;
  const asio::any_io_executor executor;
  const std::unique_ptr<Queue> local;  // this node's jobs, under the seam's rules
  int wake_fd = -1;

  // Shared with the callers, under `mutex`.
  std::mutex mutex;
  std::deque<Command> commands;
  bool stopping = false;
  bool connected = false;
  std::unordered_map<std::int64_t, Held> held;  // by delivery id
  // Jobs settled while their delivery tag was void (a reconnection): their redelivery is acked
  // on arrival instead of being handed out again. Bounded: past the bound a redelivery is handed
  // out again (at least once).
  std::set<std::int64_t> settled_unacked;
  static constexpr std::size_t max_settled_unacked = 100000;

  // The thread's own.
  amqp_connection_state_t conn = nullptr;
  std::uint64_t generation = 0;
  std::uint64_t published = 0;  // publish sequence numbers on the confirm channel
  std::map<std::uint64_t, Command> unconfirmed;
  std::set<std::uint64_t> returned;  // unroutable publishes (basic.return) awaiting their confirm
  std::map<std::string, bool> declared;                     // queue name -> declared
  std::map<std::string, amqp_channel_t> consuming;          // destination -> channel
  std::thread thread;

  std::string shard_queue(const std::string& destination, int shard) const {
    return settings.queue_prefix + "." + destination + ".s" + std::to_string(shard);
  }
  std::string dead_queue(const std::string& destination) const {
    return settings.queue_prefix + "." + destination + ".dead";
  }
  std::string queue_for(const DeliveryJob& j) const {
    auto h = j.patient_key.empty() ? fnv1a(std::to_string(j.delivery_id)) : fnv1a(j.patient_key);
    return shard_queue(j.destination, static_cast<int>(h % static_cast<std::uint64_t>(settings.shards)));
  }

  void wake() {
    std::uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  // From a caller: false when stopped (the command's completion is not called then).
  bool submit(Command c) {
    {
      std::lock_guard lock(mutex);
      if (stopping) return false;
      commands.push_back(std::move(c));
    }
    wake();
    return true;
  }

  // ---- on the thread ----

  std::string connect() {
    conn = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn);
    if (!socket) return "could not create a socket";
    timeval tv{static_cast<long>(settings.connect_timeout.count()), 0};
    if (int rc = amqp_socket_open_noblock(socket, settings.host.c_str(), settings.port, &tv); rc != AMQP_STATUS_OK)
      return "cannot connect to " + settings.host + ":" + std::to_string(settings.port) + ": " + amqp_error_string2(rc);
    auto login = amqp_login(conn, settings.vhost.c_str(), 0, 131072, 30, AMQP_SASL_METHOD_PLAIN,
                            settings.user.c_str(), settings.password.c_str());
    if (login.reply_type != AMQP_RESPONSE_NORMAL) return "login to vhost '" + settings.vhost + "' failed: " + reply_error(login);
    amqp_channel_open(conn, publish_channel);
    if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) return reply_error(r);
    amqp_confirm_select(conn, publish_channel);
    if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) return reply_error(r);
    amqp_channel_open(conn, admin_channel);
    if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) return reply_error(r);
    ++generation;
    published = 0;
    declared.clear();
    return "";
  }

  std::string declare(const std::string& queue, bool shard) {
    if (declared.count(queue)) return "";
    amqp_table_entry_t entries[2];
    entries[0].key = amqp_cstring_bytes("x-queue-type");
    entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[0].value.value.bytes = amqp_cstring_bytes("quorum");
    entries[1].key = amqp_cstring_bytes("x-single-active-consumer");
    entries[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    entries[1].value.value.boolean = 1;
    amqp_table_t args{shard ? 2 : 1, entries};
    amqp_queue_declare(conn, admin_channel, bytes_of(queue), 0, 1, 0, 0, args);
    auto r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      // A queue of that name with other arguments (a classic queue, another shard count...):
      // RabbitMQ closed the admin channel; answer and open it again for the next declaration.
      if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t close_ok{};
        amqp_send_method(conn, admin_channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        amqp_channel_open(conn, admin_channel);
        (void)amqp_get_rpc_reply(conn);
      }
      else
        channel_ok = false;
      return "declaring " + queue + ": " + reply_error(r);
    }
    declared[queue] = true;
    return "";
  }
  bool channel_ok = true;  // false once a declaration failed with the connection

  std::string destination_of_queue(const std::string& queue) const {
    // PREFIX.D.sN or PREFIX.D.dead
    auto start = settings.queue_prefix.size() + 1;
    auto end = queue.rfind('.');
    return queue.substr(start, end - start);
  }

  // Publishes. False when the connection failed: `c` is then left to the caller, to be sent
  // again on the next connection. A queue RabbitMQ refuses fails the job.
  bool publish(Command& c) {
    const bool is_dead = c.queue.size() > 5 && c.queue.compare(c.queue.size() - 5, 5, ".dead") == 0;
    channel_ok = true;
    if (auto e = declare(c.queue, !is_dead); !e.empty()) {
      if (!channel_ok) return false;
      c.done->complete(unavailable(e));
      c.done.reset();
      return true;
    }
    // Mandatory, so that a queue deleted under us returns the job instead of dropping it; the
    // publish number as message id says which publish a return was.
    const auto number = std::to_string(published + 1);
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.delivery_mode = 2;  // persistent
    props.content_type = amqp_cstring_bytes("application/x-tellonce-job");
    props.message_id = bytes_of(number);
    int rc = amqp_basic_publish(conn, publish_channel, amqp_empty_bytes, bytes_of(c.queue), 1, 0, &props,
                                bytes_of(c.body));
    if (rc != AMQP_STATUS_OK) return false;
    unconfirmed.emplace(++published, std::move(c));
    return true;
  }

  void confirmed(std::uint64_t tag, bool multiple, bool ok) {
    auto end = multiple ? unconfirmed.upper_bound(tag) : unconfirmed.find(tag);
    auto begin = multiple ? unconfirmed.begin() : end;
    if (!multiple) {
      if (end == unconfirmed.end()) return;
      ++end;
    }
    for (auto it = begin; it != end;) {
      auto& c = it->second;
      if (ok && c.ack_tag != 0 && c.generation == generation) amqp_basic_ack(conn, c.ack_channel, c.ack_tag, 0);
      if (ok && returned.erase(it->first)) {
        declared.erase(c.queue);  // declared again at the next publish
        c.done->complete(unavailable("RabbitMQ had no queue " + c.queue + " for the job"));
      } else if (ok) {
        c.done->complete(Result<void>{});
      } else {
        c.done->complete(unavailable("RabbitMQ did not take the job (nack)"));
      }
      it = unconfirmed.erase(it);
    }
  }

  bool consume(const std::string& destination) {
    if (consuming.count(destination)) return true;
    auto channel = static_cast<amqp_channel_t>(first_consume_channel + consuming.size());
    amqp_channel_open(conn, channel);
    if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) {
      log::error(component, "opening a channel for " + destination + ": " + reply_error(r));
      return false;
    }
    amqp_basic_qos(conn, channel, 0, static_cast<std::uint16_t>(settings.prefetch), 0);
    if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) return false;
    for (int s = 0; s < settings.shards; ++s) {
      auto q = shard_queue(destination, s);
      if (auto e = declare(q, true); !e.empty()) {
        log::error(component, e);
        return false;
      }
      amqp_basic_consume(conn, channel, bytes_of(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
      if (auto r = amqp_get_rpc_reply(conn); r.reply_type != AMQP_RESPONSE_NORMAL) {
        log::error(component, "consuming " + q + ": " + reply_error(r));
        return false;
      }
    }
    consuming[destination] = channel;
    return true;
  }

  void arrived(amqp_envelope_t& env) {
    std::string_view body(static_cast<const char*>(env.message.body.bytes), env.message.body.len);
    auto job = decode(body);
    if (!job) {
      // Not ours (or damaged): dead-lettering it would need its destination; drop it loudly.
      log::error(component, "dropping an unreadable message from " +
                                std::string(static_cast<char*>(env.routing_key.bytes), env.routing_key.len));
      amqp_basic_ack(conn, env.channel, env.delivery_tag, 0);
      return;
    }
    {
      std::lock_guard lock(mutex);
      if (settled_unacked.erase(job->delivery_id)) {
        // Settled here while its connection was being replaced: only the ack was missing.
        amqp_basic_ack(conn, env.channel, env.delivery_tag, 0);
        return;
      }
      auto [it, fresh] = held.try_emplace(job->delivery_id);
      if (!fresh && it->second.tag != 0 && it->second.generation == generation) {
        // A second copy (a publish sent again after a lost confirm): this node holds the job
        // un-acknowledged already, so the copy goes.
        amqp_basic_ack(conn, env.channel, env.delivery_tag, 0);
        return;
      }
      it->second = Held{env.channel, env.delivery_tag, generation};
      if (!fresh) return;  // a redelivery of a job this node holds: only its tag changes
    }
    auto push = local->push(std::move(*job));
    asio::co_spawn(executor, std::move(push), [](std::exception_ptr e, Result<void> r) {
      if (e || !r) log::warn(component, "a job from RabbitMQ was not queued locally (stopping)");
    });
  }

  void fail_unconfirmed(const std::string& why) {
    for (auto& [tag, c] : unconfirmed) c.done->complete(unavailable(why));
    unconfirmed.clear();
  }

  // Reads what the broker sent; false when the connection failed.
  bool read_frames() {
    for (;;) {
      amqp_maybe_release_buffers(conn);
      amqp_envelope_t env;
      timeval zero{0, 0};
      auto r = amqp_consume_message(conn, &env, &zero, 0);
      if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        arrived(env);
        amqp_destroy_envelope(&env);
        continue;
      }
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) return true;
      if (r.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION || r.library_error != AMQP_STATUS_UNEXPECTED_STATE) {
        log::error(component, "connection lost: " + reply_error(r));
        return false;
      }
      amqp_frame_t frame;
      if (amqp_simple_wait_frame_noblock(conn, &frame, &zero) != AMQP_STATUS_OK) return false;
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
          confirmed(m->delivery_tag, m->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
          confirmed(m->delivery_tag, m->multiple != 0, false);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          amqp_message_t message;
          auto read = amqp_read_message(conn, frame.channel, &message, 0);
          if (read.reply_type != AMQP_RESPONSE_NORMAL) return false;
          if (message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
            std::string_view id(static_cast<const char*>(message.properties.message_id.bytes),
                                message.properties.message_id.len);
            std::uint64_t number = 0;
            std::from_chars(id.data(), id.data() + id.size(), number);
            returned.insert(number);
          }
          amqp_destroy_message(&message);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
          log::error(component, "RabbitMQ closed a channel or the connection; reconnecting");
          return false;
        default:
          break;
      }
    }
  }

  // Publishes not confirmed when a connection failed, sent again on the next one (a job may
  // then be in its shard twice: at least once). Failed when no connection comes back in time.
  std::deque<Command> resend;
  std::chrono::steady_clock::time_point resend_deadline;

  void drop_connection() {
    if (resend.empty() && !unconfirmed.empty())
      resend_deadline = std::chrono::steady_clock::now() + std::max(settings.connect_timeout, std::chrono::seconds(5));
    std::deque<Command> again;
    for (auto& [number, c] : unconfirmed) again.push_back(std::move(c));
    unconfirmed.clear();
    for (auto& c : resend) again.push_back(std::move(c));
    resend.swap(again);
    returned.clear();
    if (conn) {
      amqp_destroy_connection(conn);
      conn = nullptr;
    }
    consuming.clear();
    std::lock_guard lock(mutex);
    connected = false;
  }

  // Waits for the socket or a wake-up; ms < 0: no limit.
  void wait(int ms) {
    pollfd fds[2] = {{wake_fd, POLLIN, 0}, {conn ? amqp_get_sockfd(conn) : -1, POLLIN, 0}};
    ::poll(fds, conn ? 2 : 1, ms);
    std::uint64_t n;
    while (::read(wake_fd, &n, sizeof n) > 0) {
    }
  }

  void fail_resend(const std::string& why) {
    for (auto& c : resend)
      if (c.done) c.done->complete(unavailable(why));
    resend.clear();
  }

  void run() {
    std::vector<std::string> destinations;  // consumed, to subscribe again after a reconnect
    while (true) {
      std::deque<Command> batch;
      bool stop_now;
      {
        std::lock_guard lock(mutex);
        batch.swap(commands);
        stop_now = stopping;
      }
      if (stop_now) {
        // Settlements made before stop() still count: their acks go out; publishes fail.
        for (auto& c : batch) {
          if (c.kind == Command::Kind::ack && conn && c.generation == generation && c.ack_tag != 0)
            amqp_basic_ack(conn, c.ack_channel, c.ack_tag, 0);
          if (c.done) c.done->complete(unavailable("delivery queue is stopped"));
        }
        break;
      }
      if (!conn) {
        if (auto e = connect(); !e.empty()) {
          drop_connection();
          log::warn(component, e + "; trying again in 1s");
          // Publishes wait for the next connection until their deadline; acks are void.
          if (resend.empty())
            resend_deadline = std::chrono::steady_clock::now() + std::max(settings.connect_timeout, std::chrono::seconds(5));
          for (auto& c : batch) {
            if (c.kind == Command::Kind::publish) resend.push_back(std::move(c));
            else if (c.kind == Command::Kind::consume) destinations.push_back(c.queue);
          }
          if (std::chrono::steady_clock::now() > resend_deadline) fail_resend("RabbitMQ is unreachable: " + e);
          wait(1000);
          continue;
        }
        {
          std::lock_guard lock(mutex);
          connected = true;
          // Tags of the old connection are void: their jobs come again and take new ones.
          for (auto& [id, h] : held) h.tag = 0;
        }
        std::sort(destinations.begin(), destinations.end());
        destinations.erase(std::unique(destinations.begin(), destinations.end()), destinations.end());
        for (auto& d : destinations) consume(d);
        for (auto it = resend.rbegin(); it != resend.rend(); ++it) batch.push_front(std::move(*it));
        resend.clear();
      }
      bool ok = true;
      for (auto& c : batch) {
        if (!ok) {  // the connection failed during this batch: publishes wait for the next one
          if (c.kind == Command::Kind::publish) resend.push_back(std::move(c));
          else if (c.kind == Command::Kind::consume) destinations.push_back(c.queue);
          continue;
        }
        switch (c.kind) {
          case Command::Kind::publish:
            if (!publish(c)) {
              ok = false;
              resend.push_back(std::move(c));
            }
            break;
          case Command::Kind::ack:
            if (c.generation == generation && c.ack_tag != 0) amqp_basic_ack(conn, c.ack_channel, c.ack_tag, 0);
            break;
          case Command::Kind::consume:
            if (!consuming.count(c.queue)) {
              destinations.push_back(c.queue);
              ok = consume(c.queue);
            }
            break;
        }
      }
      // Bounded, so that heartbeats go out on an idle connection (rabbitmq-c sends them while reading).
      if (ok && !amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) wait(5000);
      if (ok) ok = read_frames();
      if (!ok) {
        log::warn(component, "connection lost; reconnecting");
        drop_connection();
      }
    }
    fail_unconfirmed("delivery queue is stopped");
    fail_resend("delivery queue is stopped");
    if (conn) {
      // Un-acknowledged jobs go back to their shards for the next consumer.
      amqp_channel_close(conn, publish_channel, AMQP_REPLY_SUCCESS);
      amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
  }

  // ---- from callers ----

  std::optional<Held> forget(std::int64_t delivery_id) {
    std::lock_guard lock(mutex);
    auto it = held.find(delivery_id);
    if (it == held.end()) return std::nullopt;
    auto h = it->second;
    held.erase(it);
    if (h.tag == 0 && settled_unacked.size() < max_settled_unacked) settled_unacked.insert(delivery_id);
    return h;
  }

  void stop() {
    {
      std::lock_guard lock(mutex);
      if (stopping) return;
      stopping = true;
    }
    local->stop();
    wake();
  }
};

class RabbitQueue final : public Queue {
 public:
  explicit RabbitQueue(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~RabbitQueue() override {
    core_->stop();
    if (core_->thread.joinable()) core_->thread.join();
  }

  asio::awaitable<Result<void>> push(DeliveryJob job) override {
    // Every node delivers to every destination it knows: it subscribes on its first push too.
    Command subscribe;
    subscribe.kind = Command::Kind::consume;
    subscribe.queue = job.destination;
    (void)core_->submit(std::move(subscribe));
    Command c;
    c.kind = Command::Kind::publish;
    c.queue = core_->queue_for(job);
    c.body = encode(job);
    co_return co_await send(std::move(c));
  }

  asio::awaitable<std::optional<DeliveryJob>> next(std::string destination) override {
    Command c;
    c.kind = Command::Kind::consume;
    c.queue = destination;
    (void)core_->submit(std::move(c));  // once stopped, the local queue answers nullopt
    co_return co_await core_->local->next(std::move(destination));
  }

  asio::awaitable<Result<void>> settle(DeliveryJob job, Settlement s) override {
    {
      std::lock_guard lock(core_->mutex);
      if (core_->stopping) co_return unavailable("delivery queue is stopped");
    }
    if (s.kind == Settlement::Kind::retry) {
      // Stays un-acknowledged, held here with its patient's later jobs (see the header).
      co_return co_await core_->local->settle(std::move(job), s);
    }
    auto h = core_->forget(job.delivery_id);
    if (s.kind == Settlement::Kind::dead) {
      Command c;
      c.kind = Command::Kind::publish;
      c.queue = core_->dead_queue(job.destination);
      c.body = encode(job);
      if (h) {
        c.ack_channel = h->channel;
        c.ack_tag = h->tag;
        c.generation = h->generation;
      }
      auto sent = co_await send(std::move(c));
      if (!sent) {
        if (h) {
          std::lock_guard lock(core_->mutex);
          core_->held.emplace(job.delivery_id, *h);
        }
        co_return sent;
      }
    } else if (h && h->tag != 0) {
      Command c;
      c.kind = Command::Kind::ack;
      c.ack_channel = h->channel;
      c.ack_tag = h->tag;
      c.generation = h->generation;
      if (!core_->submit(std::move(c))) co_return unavailable("delivery queue is stopped");
    }
    co_return co_await core_->local->settle(std::move(job), s);
  }

  QueueStats stats(const std::string& destination) const override { return core_->local->stats(destination); }
  bool shared() const override { return true; }
  void stop() override { core_->stop(); }

 private:
  // Hands a publish to the thread and waits for RabbitMQ's confirm.
  asio::awaitable<Result<void>> send(Command c) {
    auto init = [core = core_, c = std::move(c)](auto handler) mutable {
      auto ex = asio::get_associated_executor(handler, core->executor);
      auto done = std::make_shared<Completion>(Completion::Handler(std::move(handler)), ex);
      c.done = done;
      if (!core->submit(std::move(c))) done->complete(unavailable("delivery queue is stopped"));
    };
    auto op = asio::async_initiate<decltype(asio::use_awaitable), void(Result<void>)>(std::move(init),
                                                                                      asio::use_awaitable);
    co_return co_await std::move(op);
  }

  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<Queue> make_rabbitmq_queue(const RabbitQueueSettings& settings, asio::any_io_executor executor) {
  auto core = std::make_shared<Core>(settings, std::move(executor));
  // Connect here, at start-up, so that a wrong address fails the start and names the server.
  if (auto e = core->connect(); !e.empty()) {
    throw std::runtime_error("queue: RabbitMQ at " + settings.host + ":" + std::to_string(settings.port) +
                             ": " + e + " (is it running? queue.host, queue.port, queue.vhost in the config)");
  }
  core->connected = true;
  core->thread = std::thread([core] { core->run(); });
  return std::make_unique<RabbitQueue>(std::move(core));
}

}  // namespace tellonce
