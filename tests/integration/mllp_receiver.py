#!/usr/bin/python3
"""A legacy HL7 v2 receiver for the integration tests, on Debian's python3-hl7 (hl7.mllp, an
asyncio MLLP server nobody here wrote). It acknowledges each message with an ACK built by
hl7.Message.create_ack and appends the message to --record, one message per line (segments
joined by CR), flushed before the ACK is written. --answers AE,AA gives the ACK code per message
in turn (the last one repeats). Prints "listening on PORT" once bound.

Run it with /usr/bin/python3: the package is Debian's, not a virtualenv's."""
import argparse
import asyncio
import os

import hl7
from hl7.mllp import start_hl7_server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True)
    parser.add_argument("--answers", default="AA")
    args = parser.parse_args()
    answers = args.answers.split(",")
    count = 0

    async def on_client(reader, writer):
        nonlocal count
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                code = answers[min(count, len(answers) - 1)]
                count += 1
                with open(args.record, "a", encoding="utf-8") as out:
                    out.write(str(message).replace("\n", "\r") + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the broker closed the connection
        finally:
            writer.close()

    async def serve():
        server = await start_hl7_server(on_client, "127.0.0.1", args.port)
        port = server.sockets[0].getsockname()[1]
        print("listening on %d" % port, flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
