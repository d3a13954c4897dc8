// Command smoke calls a running drydock-statemgmt server from Go with the
// stubs protoc-gen-go and protoc-gen-go-grpc generate from proto/: it creates
// a task, watches it while appending result messages (every message once, in
// order, then the stream ends after the task completes), and decodes the
// google.rpc.ErrorInfo of a GetTask on a random id (TASK_NOT_FOUND). Any
// mismatch exits 1. CI runs it (.ci/clients.sh); see the README's Go quick start.
//
//	smoke -addr 127.0.0.1:50051
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	statemgmtv1 "github.com/airshipit/drydock-statemgmt/gen/go/drydock/statemgmt/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const messages = 20

var checks, failures int

func check(ok bool, format string, args ...interface{}) {
	checks++
	if ok {
		fmt.Printf("ok   %s\n", fmt.Sprintf(format, args...))
		return
	}
	failures++
	fmt.Printf("FAIL %s\n", fmt.Sprintf(format, args...))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// grpc.Dial and WithInsecure are what Debian's grpc-go (1.33) has; newer
	// releases also offer grpc.NewClient and credentials/insecure.
	conn, err := grpc.Dial(*addr, grpc.WithInsecure())
	if err != nil {
		log.Fatalf("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	client := statemgmtv1.NewStateServiceClient(conn)

	// Create a task (retry-safe: the id is ours).
	rc, _ := structpb.NewStruct(map[string]interface{}{"user": "go-smoke"})
	id := uuid()
	created, err := client.CreateTask(ctx, &statemgmtv1.CreateTaskRequest{
		TaskId: id, Action: "deploy_nodes", RequestContext: rc, InitialStatus: statemgmtv1.TaskStatus_TASK_STATUS_QUEUED,
	})
	if err != nil {
		log.Fatalf("CreateTask: %v", err)
	}
	check(created.Task.TaskId == id && created.Task.Status == statemgmtv1.TaskStatus_TASK_STATUS_QUEUED,
		"CreateTask returns task %s QUEUED", id)
	check(created.Task.RequestContext.GetFields()["user"].GetStringValue() == "go-smoke", "request context round-trips")

	// Watch it while appending from another goroutine.
	stream, err := client.WatchTask(ctx, &statemgmtv1.WatchTaskRequest{TaskId: id})
	if err != nil {
		log.Fatalf("WatchTask: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		log.Fatalf("WatchTask first event: %v", err)
	}
	check(first.GetTask().GetTaskId() == id, "the watch starts with a snapshot of the task")
	appendErr := make(chan error, 1)
	go func() {
		for i := 1; i <= messages; i++ {
			_, err := client.AppendResultMessages(ctx, &statemgmtv1.AppendResultMessagesRequest{
				TaskId:        id,
				FirstSequence: int64(i), // a retry of this append could never store it twice
				Messages: []*statemgmtv1.NewResultMessage{{
					Message: fmt.Sprintf("message %d", i), Error: i%5 == 0, ContextType: "node", Context: "n1",
				}},
			})
			if err != nil {
				appendErr <- err
				return
			}
		}
		_, err := client.UpdateTask(ctx, &statemgmtv1.UpdateTaskRequest{
			Task: &statemgmtv1.Task{TaskId: id, Status: statemgmtv1.TaskStatus_TASK_STATUS_COMPLETE,
				Result: &statemgmtv1.TaskResult{Status: statemgmtv1.ActionResult_ACTION_RESULT_SUCCESS}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "result.status"}},
		})
		appendErr <- err
	}()
	var last int64
	inOrder, complete := true, false
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatalf("WatchTask: %v", err)
		}
		if m := ev.GetMessage(); m != nil {
			if m.Sequence != last+1 || m.Message != fmt.Sprintf("message %d", m.Sequence) {
				inOrder = false
			}
			last = m.Sequence
		} else if t := ev.GetTask(); t != nil && t.Status == statemgmtv1.TaskStatus_TASK_STATUS_COMPLETE {
			complete = true
		}
	}
	if err := <-appendErr; err != nil {
		log.Fatalf("append/update: %v", err)
	}
	check(inOrder && last == messages, "the watch saw messages 1..%d once each, in order (last %d)", messages, last)
	check(complete, "the watch saw the COMPLETE snapshot and then ended")
	got, err := client.GetTask(ctx, &statemgmtv1.GetTaskRequest{TaskId: id})
	if err != nil {
		log.Fatalf("GetTask: %v", err)
	}
	check(got.Task.Result.ErrorCount == messages/5, "error_count is %d (got %d)", messages/5, got.Task.Result.ErrorCount)

	// Error details: a GetTask on a random id.
	_, err = client.GetTask(ctx, &statemgmtv1.GetTaskRequest{TaskId: uuid()})
	st := status.Convert(err)
	check(st.Code() == codes.NotFound, "GetTask on a random id answers NOT_FOUND (got %s)", st.Code())
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			info = ei
		}
	}
	check(info != nil && info.Reason == "TASK_NOT_FOUND" && info.Domain == "statemgmt.drydock.airshipit.org",
		"its ErrorInfo has reason TASK_NOT_FOUND in domain statemgmt.drydock.airshipit.org (got %v)", info)

	// The same plain closing line as the other suites.
	fmt.Printf("smoke: %d passed, %d failed\n", checks-failures, failures)
	if failures > 0 {
		os.Exit(1)
	}
}

// uuid returns a random (version 4) UUID in canonical form.
func uuid() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		log.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
