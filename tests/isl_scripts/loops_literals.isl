// islrun's own test script: For ... Step up and down, Forever with Break, hex literals,
// functions (Bit, Instr, Chr, Asc, Abs, Int, ArraySize), and a variable declared in an event
// that the subs it calls use.
Event Inq : 1
    var i : N5
    var s : A40
    var n : N5
    var list[4] : A5
    For i = 1 To 9 Step 3
        Format s As s, i
    EndFor
    For i = 10 To 1 Step -4
        Format s As s, "-", i
    EndFor
    InfoMessage s
    n = 0
    Forever
        n = n + 1
        If n >= 0x10
            Break
        EndIf
    EndFor
    InfoMessage n, 0xFF
    InfoMessage Bit(0x5, 3), Bit("08", 5)
    InfoMessage Instr(1, "LOYALTY", "AL"), Chr(65)
    InfoMessage Asc("A"), Abs(-2.5)
    InfoMessage Int(7.9), ArraySize(list)
    Call Shout
EndEvent

Sub Shout
    InfoMessage "event-local", n
EndSub
