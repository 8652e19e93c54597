// islrun's own test script: the guard production scripts write before reading the detail
// after i, and the system variables of the detail, the clock, taxes and the workstation.
Event Inq : 1
    var i : N3
    var refs : N3
    For i = 1 To @NUMDTLT
        If i + 1 <= @NUMDTLT And @DTL_TYPE[i + 1] = "R"
            refs = refs + 1
        EndIf
    EndFor
    InfoMessage "refs", refs
    InfoMessage @DTL_SEAT[1], @DTL_IS_COND[2]
    InfoMessage Bit(@DTL_STATUS[1], 5), Bit(@DTL_STATUS[2], 5)
    InfoMessage @WEEKDAY, @ALPHASCREEN
    InfoMessage @TAX[1], @SLVL
    @IDLE_SECONDS = 30
    InfoMessage @IDLE_SECONDS
EndEvent

Event Inq : 2
    var i : N3
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i + 1] = "R"
            InfoMessage "never reached at the last line"
        EndIf
    EndFor
EndEvent
