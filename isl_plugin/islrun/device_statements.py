"""Running the statements that talk to the workstation: windows and displays, the ISL
touchscreen, the cashier's keys, files, printing, DLL calls (devices.py records each).

Where ISL's exact behaviour is not public, islrun's reading is written here and in docs/isl.md:
- The cashier's answers are scripted, in order: `Input`, each field of `WindowInput` /
  `WindowEdit`, `InputKey`, and every `WaitForEnter` / `WaitForConfirm` / `WaitForClear` /
  `WaitForAnyKey` take the next one. `None` is the Clear key. For `InputKey`, an answer written
  `[Label]` touches the ISL touchscreen key with that label; any other text is typed, then Enter.
- Clear at `WaitForConfirm` or in a window's input cancels as Clear at `Input` does.
- `FWrite` writes its values as one comma-separated line (text in double quotes); `FWriteLn`
  writes them joined as they are; `FRead` / `FReadLn` read the next line back. At the end of the
  file the variables are emptied and `@FILE_ERRNO` is 1.
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

from isl_plugin.islrun.devices import DllArg, TouchKey
from isl_plugin.islrun.nodes import (
    DeviceArg,
    DeviceStmt,
    DllCallStmt,
    FieldArg,
    FormatItem,
    RefArg,
    SysVar,
    Target,
    VarRef,
    WholeArray,
    Word,
)
from isl_plugin.islrun.sysvars import PRINTER_NAMES
from isl_plugin.islrun.values import (
    KEY_CLEAR,
    KEY_ENTER,
    KeyValue,
    Value,
    apply_spec,
    to_int,
    to_text,
)

if TYPE_CHECKING:
    from isl_plugin.islrun.interpreter import Frame, Interpreter


def _fail(message: str) -> Exception:
    from isl_plugin.islrun.interpreter import _Fail

    return _Fail(message)


def _exit_cancel(message: str) -> Exception:
    from isl_plugin.islrun.interpreter import ScriptExit

    return ScriptExit("ExitCancel", message)


def _text(interp: Interpreter, item: DeviceArg, frame: Frame) -> str:
    if isinstance(item, FormatItem):
        value = interp._eval(item.expr, frame)
        text = to_text(value, interp.host.decimals)
        if item.spec is not None:
            text = apply_spec(text, item.spec, not isinstance(value, str))
        return text
    if isinstance(item, FieldArg | Word | WholeArray):  # pragma: no cover - shapes keep these out
        raise _fail(f"{item!r} is not a value")
    return to_text(interp._eval(item, frame), interp.host.decimals)


def _value(interp: Interpreter, item: DeviceArg, frame: Frame) -> Value:
    if isinstance(item, FormatItem):
        return interp._eval(item.expr, frame)
    if isinstance(item, FieldArg | Word | WholeArray):  # pragma: no cover - shapes keep these out
        raise _fail(f"{item!r} is not a value")
    return interp._eval(item, frame)


def _target(item: DeviceArg) -> Target:
    if isinstance(item, FieldArg):
        return item.target
    if isinstance(item, FormatItem):
        item = item.expr
    if not isinstance(item, VarRef | SysVar):
        raise _fail("expected a variable")
    return item


def _texts(interp: Interpreter, items: tuple[DeviceArg, ...], frame: Frame) -> str:
    return "".join(_text(interp, item, frame) for item in items)


async def _answer(interp: Interpreter, prompt: str) -> str | None:
    return interp.host.next_input(prompt)


async def run_device(interp: Interpreter, stmt: DeviceStmt, frame: Frame) -> None:
    name, args = stmt.name, stmt.args
    devices = interp.host.devices
    note = interp.host.note
    if name == "window":
        rows, cols = to_int(_value(interp, args[0], frame)), to_int(_value(interp, args[1], frame))
        title = _text(interp, args[2], frame) if len(args) > 2 else ""
        devices.open_window(rows, cols, title)
        interp.fields.clear()
        note("window", f"{rows} x {cols} {title!r}")
    elif name == "windowclose":
        devices.close_window()
        interp.fields.clear()
        note("window", "closed")
    elif name in ("display", "displayinverse"):
        row, col = to_int(_value(interp, args[0], frame)), to_int(_value(interp, args[1], frame))
        text = _texts(interp, args[2:], frame)
        devices.display(row, col, text)
        note("display", f"{row},{col} {text!r}")
    elif name in ("displayinput", "displaymsinput"):
        for start in range(0, len(args) - 2, 4):
            row = to_int(_value(interp, args[start], frame))
            col = to_int(_value(interp, args[start + 1], frame))
            field = args[start + 2]
            prompt = _text(interp, args[start + 3], frame) if start + 3 < len(args) else ""
            assert isinstance(field, FieldArg)
            devices.display(row, col, prompt)
            target = field.target
            label = target.name if isinstance(target, VarRef) else "?"
            if devices.window is not None:
                devices.window.fields.append((row, col, label))
            interp.fields.append((field, prompt or label, name == "displaymsinput"))
    elif name in ("windowinput", "windowedit", "windowinputwithsave", "windoweditwithsave"):
        await _window_input(interp, frame)
    elif name in ("waitforenter", "waitforconfirm", "waitforclear", "waitforanykey"):
        prompt = _texts(interp, args, frame) or name
        interp.host.show("prompt", (prompt,))
        answer = await _answer(interp, prompt)
        if answer is None and name == "waitforconfirm":
            interp.input_status = 0
            if not interp.continue_on_cancel:
                raise _exit_cancel(f"cancelled at {name}")
        else:
            interp.input_status = 1
    elif name == "inputkey":
        await _input_key(interp, args, frame)
    elif name == "touchscreen":
        number = to_int(_value(interp, args[0], frame))
        devices.touchscreens.append(number)
        note("touchscreen", str(number))
    elif name == "clearislts":
        devices.isl_keys.clear()
    elif name in ("setisltskeyx", "setisltskey"):
        values = [_value(interp, arg, frame) for arg in args]
        keys = [v for v in values if isinstance(v, KeyValue)]
        if not keys:
            raise _fail(f"{name} needs a key (such as @KEY_ENTER or Key(1, n))")
        label = (
            to_text(values[-1], interp.host.decimals)
            if not isinstance(values[-1], KeyValue)
            else ""
        )
        row = to_int(values[0]) if not isinstance(values[0], KeyValue) else 0
        col = to_int(values[1]) if len(values) > 1 and not isinstance(values[1], KeyValue) else 0
        devices.isl_keys.append(TouchKey(row, col, keys[0], label))
    elif name in ("displayislts", "popupislts"):
        labels = ", ".join(f"[{key.label}]" for key in devices.isl_keys)
        note("touchscreen", f"ISL keys {labels}")
    elif name in ("fopen", "fclose", "fwrite", "fwriteln", "fread", "freadln"):
        _file(interp, stmt, frame)
    elif name in ("fseek", "flock", "funlock"):
        note("file", f"{name} (not simulated)")
    elif name == "dllload":
        library = _text(interp, args[1], frame)
        handle = devices.dll_load(library)
        interp._assign(_target(args[0]), handle, frame)
        note("dll", f"DLLLoad {library} -> {handle}")
    elif name == "dllfree":
        devices.dll_free(to_int(_value(interp, args[0], frame)))
    elif name == "startprint":
        which = _value(interp, args[0], frame)
        printer = PRINTER_NAMES.get(to_int(which), to_text(which, interp.host.decimals))
        devices.start_print(printer)
        note("print", f"StartPrint {printer}")
    elif name == "printline":
        text = _texts(interp, args, frame)
        devices.print_line(text)
        note("print", text)
    elif name == "endprint":
        devices.end_print()
        note("print", "EndPrint")
    elif name in ("msleep", "beep", "errorbeep"):
        note(name, " ".join(_text(interp, arg, frame) for arg in args))
    elif name == "cleararray":
        array = args[0]
        assert isinstance(array, WholeArray)
        slot = interp._slot(array, frame)
        from isl_plugin.islrun.interpreter import ArrayCell

        assert isinstance(slot, ArrayCell)
        for cell in slot.items:
            cell.value = cell.type.default()
    elif name == "loaddbkybdmacro":
        number = to_int(_value(interp, args[0], frame))
        note("warning", f"LoadDbKybdMacro {number}: a macro of the POS database, not simulated")
    elif name == "clearkybdmacro":
        interp.host.clear_macros()
    else:  # pragma: no cover - DEVICE_SHAPES and this list agree
        raise _fail(f"{name} is not simulated")


async def _window_input(interp: Interpreter, frame: Frame) -> None:
    """Each input field of the window, in the order Display*Input made them, takes an answer."""
    fields, interp.fields = list(interp.fields), []
    for field, prompt, swiped in fields:
        answer = await _answer(interp, prompt)
        if answer is None:
            interp.input_status = 0
            if not interp.continue_on_cancel:
                raise _exit_cancel("cancelled in a window")
            return
        interp.input_status = 1
        interp.mag_status = "Y" if swiped else "N"
        interp._assign(field.target, answer, frame)


async def _input_key(interp: Interpreter, args: tuple[DeviceArg, ...], frame: Frame) -> None:
    prompt = _texts(interp, args[2:], frame)
    answer = await _answer(interp, prompt)
    key: KeyValue = KEY_ENTER
    data = ""
    if answer is None:
        key = KEY_CLEAR
    elif answer.startswith("[") and answer.endswith("]"):
        label = answer[1:-1].strip().lower()
        match = [k for k in interp.host.devices.isl_keys if k.label.strip().lower() == label]
        if not match:
            shown = ", ".join(k.label for k in interp.host.devices.isl_keys) or "none"
            raise _fail(f"InputKey: no ISL touchscreen key {answer} (keys: {shown})")
        key = match[0].key
    else:
        data = answer
    interp._assign(_target(args[0]), key, frame)
    interp._assign(_target(args[1]), data, frame)


def _csv_line(values: list[Value], decimals: int) -> str:
    parts = []
    for value in values:
        text = to_text(value, decimals)
        parts.append(f'"{text}"' if isinstance(value, str) else text)
    return ",".join(parts)


def _file(interp: Interpreter, stmt: DeviceStmt, frame: Frame) -> None:
    name, args = stmt.name, stmt.args
    devices = interp.host.devices
    decimals = interp.host.decimals
    if name == "fopen":
        path = _text(interp, args[1], frame)
        mode = args[2].text if isinstance(args[2], Word) else _text(interp, args[2], frame).lower()
        handle = devices.file_open(path, mode)
        interp.file_errno, interp.file_errstr = (0, "") if handle else (2, f"cannot open {path}")
        interp._assign(_target(args[0]), handle, frame)
        interp.host.note("file", f"FOpen {path} {mode} -> {handle}")
        return
    handle = to_int(_value(interp, args[0], frame))
    if name == "fclose":
        devices.file_close(handle)
    elif name == "fwrite":
        devices.file_write(
            handle, _csv_line([_value(interp, a, frame) for a in args[1:]], decimals)
        )
    elif name == "fwriteln":
        devices.file_write(handle, _texts(interp, args[1:], frame))
    else:
        line = devices.file_read_line(handle)
        interp.file_errno = 1 if line is None else 0
        targets = [_target(arg) for arg in args[1:]]
        pieces = [line or ""] if name == "freadln" else next(csv.reader([line])) if line else []
        for position, target in enumerate(targets):
            interp._assign(target, pieces[position] if position < len(pieces) else "", frame)


def dll_call(interp: Interpreter, stmt: DllCallStmt, frame: Frame) -> None:
    """Call the configured DLL function with the arguments' values; write back what it returned
    for its `ref` arguments."""
    handle = to_int(interp._eval(stmt.handle, frame))
    values: list[DllArg] = []
    for arg in stmt.args:
        if isinstance(arg, RefArg) and isinstance(arg.target, WholeArray):
            from isl_plugin.islrun.interpreter import ArrayCell

            slot = interp._slot(arg.target, frame)
            assert isinstance(slot, ArrayCell)
            values.append([cell.value for cell in slot.items])
        elif isinstance(arg, RefArg):
            assert not isinstance(arg.target, WholeArray)
            values.append(interp._eval(arg.target, frame))
        else:
            values.append(interp._eval(arg, frame))
    result = interp.host.devices.dll_call(handle, stmt.function, values)
    interp.host.note("dll", f"{stmt.function}({len(values)} argument(s))")
    for position, value in result.refs.items():
        if not 1 <= position <= len(stmt.args):
            raise _fail(f"{stmt.function} wrote argument {position} of {len(stmt.args)}")
        arg = stmt.args[position - 1]
        if not isinstance(arg, RefArg):
            raise _fail(f"{stmt.function} wrote argument {position}, which is not passed ref")
        if isinstance(arg.target, WholeArray):
            from isl_plugin.islrun.interpreter import ArrayCell

            slot = interp._slot(arg.target, frame)
            assert isinstance(slot, ArrayCell)
            items = value if isinstance(value, list) else [value]
            for cell, item in zip(slot.items, items, strict=False):
                interp._store(cell, item)
        elif isinstance(value, list):
            raise _fail(f"{stmt.function} wrote a list to argument {position}")
        else:
            interp._assign(arg.target, value, frame)
