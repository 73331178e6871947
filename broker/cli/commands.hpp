#pragma once

#include "tellonce/registry.hpp"

namespace tellonce {

int run_serve_command(int argc, char** argv, const AdapterRegistry& registry);
int run_message_command(int argc, char** argv, const AdapterRegistry& registry);
int run_replay_command(int argc, char** argv, const AdapterRegistry& registry);
int run_messages_command(int argc, char** argv, const AdapterRegistry& registry);      // api_client.cpp
int run_destinations_command(int argc, char** argv, const AdapterRegistry& registry);  // api_client.cpp
int run_mllp_send_command(int argc, char** argv);  // mllp_send.cpp
int run_hash_key_command(int argc, char** argv);   // hash_key.cpp
int run_audit_command(int argc, char** argv, const AdapterRegistry& registry);  // audit_command.cpp

}  // namespace tellonce
