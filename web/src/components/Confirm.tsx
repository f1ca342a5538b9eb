// An in-page yes/no question ([data-testid=confirm-dialog]): asked before an action replaces a
// canvas with unsaved changes. One question at a time; a second one answers the first "no".
import { useEffect, useRef, useSyncExternalStore } from "react";
import { graph } from "../graph";

interface Question {
  text: string;
  ok: string;
  answer: (yes: boolean) => void;
}

let current: Question | null = null;
const listeners = new Set<() => void>();

function set(next: Question | null) {
  current = next;
  for (const l of listeners) l();
}

export function ask(text: string, ok: string): Promise<boolean> {
  current?.answer(false);
  return new Promise((resolve) => {
    const question: Question = {
      text,
      ok,
      answer: (yes) => {
        if (current === question) set(null);
        resolve(yes);
      },
    };
    set(question);
  });
}

/** Whether `what` may replace the canvas: yes when nothing unsaved would be lost, else ask. */
export async function mayReplaceCanvas(what: string): Promise<boolean> {
  if (!graph.hasUnsavedChanges()) return true;
  return ask(`${what} replaces the canvas, which has unsaved changes (Undo brings them back).`, "Discard changes");
}

export function ConfirmDialog() {
  const question = useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => current,
  );
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => cancel.current?.focus(), [question]);
  if (!question) return null;
  return (
    <div className="nf-modal-backdrop nf-confirm-backdrop" onClick={() => question.answer(false)}>
      <div
        className="nf-confirm"
        data-testid="confirm-dialog"
        role="alertdialog"
        onClick={(e) => e.stopPropagation()}
        onKeyDown={(e) => {
          if (e.key === "Escape") question.answer(false);
        }}
      >
        <p>{question.text}</p>
        <div className="nf-confirm-actions">
          <button ref={cancel} data-testid="confirm-cancel" onClick={() => question.answer(false)}>
            Cancel
          </button>
          <button className="nf-danger" data-testid="confirm-ok" onClick={() => question.answer(true)}>
            {question.ok}
          </button>
        </div>
      </div>
    </div>
  );
}
