"""The README's Python quick start with the library (CI runs it: python3 quickstart.py ADDRESS)."""
import sys
import threading

from drydock_statemgmt import LeaderElector, ResultMessage, StateClient, Task, TaskNotFound, TaskStatus

client = StateClient(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")  # token=..., root_certificates=... for TLS

# Lead, then claim work under the leadership fence.
elector = LeaderElector(client, "orchestrator", "orch-1", ttl=10).start()
elector.wait_for(True, timeout=10)
task = client.create_task("deploy_nodes", queued=True, request_context={"user": "alice"})  # retry-safe: client-chosen id
claimed = client.claim_next_task("orch-1", actions=["deploy_nodes"], fence=elector.fence())

# One writer per task: every append carries first_sequence, so retries never store twice.
def work():
    writer = client.result_writer(claimed.task_id)
    for node in ("n1", "n2", "n3"):
        writer.append({"message": f"Deployed {node}", "context_type": "node", "context": node})
    done = Task(task_id=claimed.task_id, status=TaskStatus.Value("TASK_STATUS_COMPLETE"))
    client.update_task(done, ["status"], fence=elector.fence())

threading.Thread(target=work).start()

# Watch it: reconnects by itself, never repeats or skips a message, ends once the task is done.
for ev in client.watch_task(claimed.task_id):
    if isinstance(ev, ResultMessage):
        print(ev.sequence, ev.message)
    else:
        print("status", TaskStatus.Name(ev.status))

try:
    client.get_task("00000000-0000-4000-8000-000000000000")
except TaskNotFound as e:
    print("not found:", e.reason, e.task_id)
elector.stop()  # resigns
client.close()
