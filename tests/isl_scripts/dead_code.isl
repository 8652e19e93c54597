// islrun's own test script: names that only code which never runs refers to. A POS loads
// such a script; islrun loads it too and fails only on the line that runs.
var gMode : N1 = 0

Event Inq : 1
    If gMode = 1
        gUndeclared = 5
        Call NoSuchSub(1)
        InfoMessage @NO_SUCH_SYSVAR
    EndIf
    InfoMessage "ran"
EndEvent

Event Inq : 2
    gUndeclared = 5
EndEvent
